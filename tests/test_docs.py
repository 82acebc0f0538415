"""The README and docs/: links resolve, the README stays short, the flag tables
are generated from the settings, and the README's test command is CI's."""

import glob
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")
GUIDE = os.path.join(REPO, "docs", "guide.md")

FLAG_TABLE = re.compile(r"<!-- flags:start -->\n(.*?)<!-- flags:end -->", re.S)
# [text](target) and ![alt](target); the target ends at whitespace or ')'
# (an optional "title" after it is ignored).
MD_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^)]*[\"'])?\s*\)")
HTML_IMG = re.compile(r"<img\b[^>]*?\bsrc\s*=\s*[\"']([^\"']+)[\"']", re.I)
MD_IMAGE = re.compile(r"!\[[^\]]*\]\(")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)
EXTERNAL = ("http://", "https://", "mailto:")


def doc_files():
    files = [README] + sorted(glob.glob(os.path.join(REPO, "docs", "**", "*.md"), recursive=True))
    return [f for f in files if os.path.isfile(f)]


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def without_code(text):
    """Markdown without fenced code blocks and inline code spans."""
    text = FENCE.sub("", text)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading):
    """GitHub's anchor of a heading: lowercase, punctuation dropped except
    '-' and '_', spaces to '-'."""
    text = re.sub(r"<[^>]+>", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text):
    """The anchors of a Markdown file's headings (repeats get -1, -2, ...)."""
    seen, result = {}, set()
    for heading in HEADING.findall(FENCE.sub("", text)):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def targets(text):
    text = without_code(text)
    return MD_LINK.findall(text) + HTML_IMG.findall(text)


def broken_links(path, text=None):
    """Relative links and images of one Markdown file that do not resolve."""
    text = read(path) if text is None else text
    problems = []
    for target in targets(text):
        if target.startswith(EXTERNAL):
            continue
        file_part, _, anchor = target.partition("#")
        if file_part:
            resolved = os.path.normpath(os.path.join(os.path.dirname(path), file_part))
        else:
            resolved = path
        where = f"{os.path.relpath(path, REPO)}: {target}"
        if not os.path.exists(resolved):
            problems.append(f"{where} (no such file)")
        elif anchor and resolved.endswith(".md"):
            own = text if resolved == path else read(resolved)
            if anchor not in anchors(own):
                problems.append(f"{where} (no heading with anchor #{anchor})")
    return problems


def test_doc_files_exist():
    names = {os.path.relpath(f, REPO) for f in doc_files()}
    assert "README.md" in names
    assert os.path.join("docs", "guide.md") in names


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: os.path.relpath(p, REPO))
def test_relative_links_and_images_resolve(path):
    assert broken_links(path) == []


def test_link_checker_flags_what_is_broken(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("# A heading, here\n\nText.\n")
    (tmp_path / "pic.png").write_bytes(b"")
    text = ("# Page\n\n## Own section\n\n"
            "[ok](there.md) [ok](there.md#a-heading-here) ![ok](pic.png) [ok](#own-section)\n"
            "[ok](https://example.com/missing.md) `[code](not_checked.md)`\n"
            "```\n[fenced](not_checked_either.md)\n```\n"
            "[bad](missing.md) ![bad](missing.png) <img src=\"gone.png\" width=\"10\">\n"
            "[bad](there.md#no-such-heading) [bad](#nowhere)\n")
    page.write_text(text)
    problems = broken_links(str(page), text)
    assert len(problems) == 5, problems
    for bad in ("missing.md", "missing.png", "gone.png", "#no-such-heading", "#nowhere"):
        assert any(bad in p for p in problems), (bad, problems)


def test_slug_follows_github():
    assert slug("Precision and threads: `--precision=auto`") == "precision-and-threads---precisionauto"
    assert slug("`configs/fast.cfg` across pairings") == "configsfastcfg-across-pairings"
    assert slug("Plan for 10,000 pictures") == "plan-for-10000-pictures"
    assert slug("snake_case stays") == "snake_case-stays"


def has_image(text):
    return bool(MD_IMAGE.search(text) or HTML_IMG.search(text))


def test_readme_fits_on_a_screen_and_shows_a_picture_early():
    lines = read(README).splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; keep it at most 300 (move detail to docs/)"
    assert has_image("\n".join(lines[:60])), "README.md needs a picture within its first 60 lines"
    # the check itself can fail
    assert not has_image("no picture here\n[a link](docs/guide.md)\n")


def test_guide_flag_table_is_generated_from_the_settings():
    from nst_keras import docs, settings

    match = FLAG_TABLE.search(read(GUIDE))
    assert match, "docs/guide.md needs the <!-- flags:start --> ... <!-- flags:end --> block"
    message = ("docs/guide.md's flag table drifted; regenerate it with "
               "python -m nst_keras.docs --write-docs")
    assert match.group(1) == docs.flag_table(), message
    for name in settings.FIELDS:
        assert f"`--{name}`" in match.group(1), message
    # the check itself can fail: a table missing its last line differs
    assert match.group(1).rsplit("\n", 2)[0] + "\n" != docs.flag_table()


def generated_tables():
    from nst_keras import docs, fields

    return [(name, marker, fields.fields_of(source))
            for name, marker, source in docs.DOC_TABLES]


@pytest.mark.parametrize("name,marker,fields", generated_tables(),
                         ids=[t[0] for t in generated_tables()])
def test_every_generated_flag_table_is_fresh(name, marker, fields):
    from nst_keras import docs

    text = read(os.path.join(REPO, "docs", name))
    block = re.compile(rf"<!-- {marker}:start -->\n(.*?)<!-- {marker}:end -->", re.S)
    match = block.search(text)
    assert match, f"docs/{name} needs the <!-- {marker}:start --> ... <!-- {marker}:end --> block"
    message = (f"docs/{name}'s flag table drifted; regenerate the tables with "
               "python -m nst_keras.docs --write-docs")
    assert match.group(1) == docs.flag_table(fields), message
    for flag in fields:
        assert f"`--{flag}`" in match.group(1), message
    # writing the tables again changes nothing; a stale table would be replaced
    assert docs.with_table(text, marker, docs.flag_table(fields)) == text
    stale = text.replace(match.group(1), match.group(1).rsplit("\n", 2)[0] + "\n")
    assert stale != text and docs.with_table(stale, marker, match.group(1)) == text


def test_every_environment_variable_read_is_listed_once_in_the_guide():
    from nst_keras import constants, docs

    text = read(GUIDE)
    assert "<!-- environment:start -->\n" + docs.environment_table() in text, \
        "docs/guide.md's environment table drifted; python -m nst_keras.docs --write-docs"
    read_here = set()
    for path in glob.glob(os.path.join(REPO, "nst_keras", "**", "*.py"), recursive=True):
        source = read(path)
        read_here |= set(re.findall(r"environ(?:\.get|\.setdefault)?\(\s*\"(\w+)\"", source))
        read_here |= set(re.findall(r"\"(NST_KERAS_\w+)\"", source))
    assert "TF_CPP_MIN_LOG_LEVEL" in read_here  # the scan sees the package's reads
    assert read_here <= set(constants.ENVIRONMENT), read_here - set(constants.ENVIRONMENT)
    for name in constants.ENVIRONMENT:  # each named in one place of the docs' reference
        assert sum(read(p).count(f"| `{name}` |") for p in glob.glob(
            os.path.join(REPO, "docs", "*.md"))) == 1, name


def test_write_docs_rewrites_every_table(tmp_path):
    from nst_keras import docs

    blocks = [(name, marker) for name, marker, _ in docs.DOC_TABLES + docs.DOC_BLOCKS]
    for name in {name for name, _ in blocks}:
        parts = [f"<!-- {m}:start -->\nold\n<!-- {m}:end -->\n" for n, m in blocks if n == name]
        (tmp_path / name).write_text(f"# {name}\n\n" + "\n".join(parts) + "\nafter\n",
                                     encoding="utf-8")
    changed = docs.write_docs(str(tmp_path))
    assert len(changed) == len({name for name, _ in blocks})
    for name, marker, source in docs.DOC_TABLES:
        text = (tmp_path / name).read_text(encoding="utf-8")
        assert docs.flag_table(source) in text and "\nold\n" not in text
        assert text.endswith("\nafter\n")
    assert docs.environment_table() in (tmp_path / "guide.md").read_text(encoding="utf-8")
    assert docs.write_docs(str(tmp_path)) == []  # fresh: nothing to write


def first_command(text):
    """The first command in the README's set-up code block."""
    section = text.split("## Set up and run", 1)[1]
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", section, re.S).group(1)
    return next(line.strip() for line in block.splitlines()
                if line.strip() and not line.lstrip().startswith("#"))


def ci_command():
    lines = [line.strip() for line in read(os.path.join(REPO, ".ci", "run")).splitlines()]
    return [line for line in lines if line and not line.startswith("#")][-1]


def test_readme_test_command_is_the_one_ci_runs():
    expected = 'python -m pip install -e ".[test]" && python -m pytest -q tests'
    assert ci_command() == expected
    assert first_command(read(README)) == ci_command(), (
        "README.md's first set-up command must be the last line of .ci/run")
    # the check itself can fail
    other = "## Set up and run\n\n```bash\n# 1.\npip install .\n```\n"
    assert first_command(other) != ci_command()
