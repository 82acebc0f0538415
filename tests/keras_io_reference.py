"""An independent transcription of the keras.io "Neural style transfer" example.

Batch of three images (content, style, combination) through the whole VGG19
feature extractor, the tutorial's formulas, its SGD loop.  Used by the tests
as the reference the package must equal.
"""

import numpy as np
import tensorflow as tf
import keras

STYLE_LAYERS = ["block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1"]
CONTENT_LAYER = "block5_conv2"


def gram_matrix(x):
    x = tf.transpose(x, (2, 0, 1))
    features = tf.reshape(x, (tf.shape(x)[0], -1))
    return tf.matmul(features, tf.transpose(features))


def make_loss(model, img_nrows, img_ncols, content_weight=2.5e-8, style_weight=1e-6,
              total_variation_weight=1e-6):
    outputs_dict = dict([(layer.name, layer.output) for layer in model.layers])
    feature_extractor = keras.Model(inputs=model.inputs, outputs=outputs_dict)

    def style_loss(style, combination):
        S = gram_matrix(style)
        C = gram_matrix(combination)
        channels = 3
        size = img_nrows * img_ncols
        return tf.reduce_sum(tf.square(S - C)) / (4.0 * (channels**2) * (size**2))

    def content_loss(base, combination):
        return tf.reduce_sum(tf.square(combination - base))

    def total_variation_loss(x):
        a = tf.square(x[:, : img_nrows - 1, : img_ncols - 1, :] - x[:, 1:, : img_ncols - 1, :])
        b = tf.square(x[:, : img_nrows - 1, : img_ncols - 1, :] - x[:, : img_nrows - 1, 1:, :])
        return tf.reduce_sum(tf.pow(a + b, 1.25))

    def compute_loss(combination_image, base_image, style_reference_image):
        input_tensor = tf.concat([base_image, style_reference_image, combination_image], axis=0)
        features = feature_extractor(input_tensor)
        loss = tf.zeros(shape=())
        layer_features = features[CONTENT_LAYER]
        loss = loss + content_weight * content_loss(layer_features[0], layer_features[2])
        for layer_name in STYLE_LAYERS:
            layer_features = features[layer_name]
            sl = style_loss(layer_features[1], layer_features[2])
            loss += (style_weight / len(STYLE_LAYERS)) * sl
        loss += total_variation_weight * total_variation_loss(combination_image)
        return loss

    @tf.function
    def compute_loss_and_grads(combination_image, base_image, style_reference_image):
        with tf.GradientTape() as tape:
            tape.watch(combination_image)
            loss = compute_loss(combination_image, base_image, style_reference_image)
        grads = tape.gradient(loss, combination_image)
        return loss, grads

    return compute_loss_and_grads


def run_sgd(model, base_image, style_reference_image, iterations):
    """The tutorial's loop; returns the loss printed at each iteration."""
    img_nrows, img_ncols = base_image.shape[1:3]
    compute_loss_and_grads = make_loss(model, img_nrows, img_ncols)
    optimizer = keras.optimizers.SGD(
        keras.optimizers.schedules.ExponentialDecay(
            initial_learning_rate=100.0, decay_steps=100, decay_rate=0.96
        )
    )
    combination_image = tf.Variable(base_image)
    losses = []
    for i in range(1, iterations + 1):
        loss, grads = compute_loss_and_grads(combination_image, base_image, style_reference_image)
        optimizer.apply_gradients([(grads, combination_image)])
        losses.append(float(loss))
    return np.array(losses), combination_image.numpy()
