"""The documentation matches the code: the README's and every docs/*.md page's ```python blocks run as written,
every `bioconv` command in their ```bash blocks parses, every relative link points at a file (and heading) that
exists, and the README stays short.

A block that cannot run here (it needs a network, a GPU, several processes or data that is not in the
repository) carries the line `<!-- no-run: why -->` right before its fence; it is then listed as a skipped test
with that reason. Such exceptions should stay few (``MAX_NO_RUN``).
"""
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / 'README.md'
PAGES = [README] + sorted((ROOT / 'docs').glob('*.md'))
MAX_README_LINES = 220
MAX_NO_RUN = 4

NO_RUN = re.compile(r'<!--\s*no-run:\s*(.*?)\s*-->$')
FENCE_OPEN = re.compile(r'^(\s*)```(\S*)')
FENCE_CLOSE = re.compile(r'^\s*```\s*$')

# Blocks run at a test-sized budget: page -> [(text in the block, what the test runs instead)]. Each pair must
# match exactly one block of its page (test_budget_substitutions_match), so the doc cannot drift from it.
BUDGETS = {
    'docs/training.md': [
        ("epochs=20, output_dir='runs/ws10'",
         "epochs=1, output_dir='runs/ws10', train_subset=32, eval_subset=32, batch_size=16"),
    ],
}


def _rel(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def code_blocks(page: Path):
    """Every fenced block of a Markdown page: dicts with lang, code (dedented to the fence), line (of the
    fence, 1-based) and no_run (the reason of a `<!-- no-run: ... -->` line right before it, else None)."""
    lines = page.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opened = FENCE_OPEN.match(lines[i])
        if not opened:
            i += 1
            continue
        indent, lang = len(opened.group(1)), opened.group(2)
        end = next((j for j in range(i + 1, len(lines)) if FENCE_CLOSE.match(lines[j])), None)
        assert end is not None, f'{_rel(page)}:{i + 1}: code block never closed'
        code = '\n'.join(line[indent:] if not line[:indent].strip() else line for line in lines[i + 1:end]) + '\n'
        before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), '')
        reason = NO_RUN.match(before)
        blocks.append(dict(lang=lang, code=code, line=i + 1, no_run=reason.group(1) if reason else None))
        i = end + 1
    return blocks


def _python_blocks():
    params = []
    for page in PAGES:
        for n, block in enumerate(b for b in code_blocks(page) if b['lang'] == 'python'):
            marks = [pytest.mark.skip(reason=f"no-run in {_rel(page)}:{block['line']}: {block['no_run']}")] \
                if block['no_run'] is not None else []
            params.append(pytest.param(page, n, block, marks=marks, id=f'{_rel(page)}-{n}'))
    return params


def _check_readme_quick_start(namespace, tmp_path):
    assert namespace['n_layers'] == 21
    assert namespace['logits'].shape == (8, 10)
    assert tuple(namespace['lc'].weight.shape) == (16, 16, 32, 3, 3, 16)


def _check_training_example(namespace, tmp_path):
    assert namespace['result'].sleeps == 1
    for name in ('metrics.csv', 'last.pth', 'model_best.pth', 'model.safetensors', 'result.json'):
        assert (tmp_path / 'runs' / 'ws10' / name).exists(), name


# What particular blocks must have computed, beyond running: (page, text in the block) -> check(namespace, tmp_path)
CHECKS = {
    ('README.md', 'import bioconv_timm'): _check_readme_quick_start,
    ('docs/training.md', 'TrainConfig('): _check_training_example,
}


@pytest.mark.parametrize('page, index, block', _python_blocks())
def test_python_block_runs(page, index, block, tmp_path, monkeypatch):
    rel = _rel(page)
    code = block['code']
    for old, new in BUDGETS.get(rel, []):
        code = code.replace(old, new)
    monkeypatch.chdir(tmp_path)  # whatever a block writes lands here
    namespace = {'__name__': '__doc_block__'}
    exec(compile(code, f"{rel}:{block['line']}", 'exec'), namespace)
    for (check_page, marker), check in CHECKS.items():
        if check_page == rel and marker in block['code']:
            check(namespace, tmp_path)


def test_the_quick_start_is_the_first_python_block_of_the_readme():
    """.ci/run executes re.findall(r'```python\\n(.*?)```', README)[0] from the installed wheel: that must be the
    self-contained quick start, and it must run here too (it is not marked no-run)."""
    ci_block = re.findall(r'```python\n(.*?)```', README.read_text(), flags=re.S)[0]
    first = next(b for b in code_blocks(README) if b['lang'] == 'python')
    assert first['code'] == ci_block and first['no_run'] is None
    assert 'import bioconv_timm' in ci_block


def test_every_check_and_budget_finds_its_block():
    for (page, marker) in CHECKS:
        hits = [b for b in code_blocks(ROOT / page) if b['lang'] == 'python' and marker in b['code']]
        assert hits, f'no python block of {page} contains {marker!r}'
    for page, pairs in BUDGETS.items():
        for old, _ in pairs:
            hits = [b for b in code_blocks(ROOT / page) if b['lang'] == 'python' and old in b['code']]
            assert len(hits) == 1, f'{page}: {old!r} is in {len(hits)} python blocks, expected exactly one'


def test_no_run_exceptions_are_few_and_explained():
    no_run = [(_rel(page), b['line'], b['no_run']) for page in PAGES for b in code_blocks(page)
              if b['lang'] == 'python' and b['no_run'] is not None]
    assert all(len(reason) >= 10 for _, _, reason in no_run), no_run
    assert len(no_run) <= MAX_NO_RUN, no_run


def test_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) < MAX_README_LINES, f'README.md has {len(lines)} lines; move details into docs/'


# --- links ------------------------------------------------------------------------------------------------------

LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)')


def _without_fences(text: str) -> str:
    return re.sub(r'^\s*```.*?^\s*```\s*$', '', text, flags=re.S | re.M)


def _prose(text: str) -> str:
    """The page without its fenced blocks and inline code, where brackets are not links."""
    return re.sub(r'`[^`\n]*`', '', _without_fences(text))


def _anchors(page: Path):
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen, anchors = {}, set()
    for heading in re.findall(r'^#{1,6}\s+(.*?)\s*#*\s*$', _without_fences(page.read_text()), flags=re.M):
        slug = re.sub(r'[^\w\- ]', '', heading.lower().replace('`', '')).replace(' ', '-')
        anchors.add(slug if slug not in seen else f'{slug}-{seen[slug]}')
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


@pytest.mark.parametrize('page', PAGES, ids=_rel)
def test_relative_links_point_at_files_that_exist(page):
    broken = []
    for target in LINK.findall(_prose(page.read_text())):
        if re.match(r'[a-z][a-z0-9+.-]*:', target, flags=re.I):  # https:, mailto:, ...
            continue
        path, _, anchor = target.partition('#')
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f'{target} (no file {resolved})')
        elif anchor and resolved.suffix == '.md' and anchor not in _anchors(resolved):
            broken.append(f'{target} (no heading #{anchor} in {_rel(resolved)})')
    assert not broken, f'{_rel(page)}: {broken}'


def test_the_docs_pages_are_linked_from_the_readme():
    linked = {(README.parent / t.partition('#')[0]).resolve() for t in LINK.findall(_prose(README.read_text()))}
    missing = [_rel(p) for p in PAGES[1:] if p.resolve() not in linked]
    assert not missing, f'docs pages the README does not link: {missing}'


# --- shell commands ---------------------------------------------------------------------------------------------

def _bioconv_commands(page: Path):
    """argv (after `bioconv`) of every `bioconv ...` or `python -m bioconv_timm.cli ...` line of the page's
    ```bash blocks, continuation lines joined, leading VAR=value assignments dropped."""
    commands = []
    for block in code_blocks(page):
        if block['lang'] not in ('bash', 'sh', 'shell'):
            continue
        for line in block['code'].replace('\\\n', ' ').splitlines():
            words = shlex.split(line, comments=True)
            while words and re.match(r'^[A-Z_][A-Z0-9_]*=', words[0]):
                words = words[1:]
            if words[:1] == ['bioconv']:
                commands.append(words[1:])
            elif words[:3] == ['python', '-m', 'bioconv_timm.cli']:
                commands.append(words[3:])
    return commands


@pytest.mark.parametrize('page', PAGES, ids=_rel)
def test_bioconv_commands_in_the_docs_parse(page):
    from bioconv_timm.cli import build_parser
    parser = build_parser()
    for argv in _bioconv_commands(page):
        argv = [word for word in argv if word not in ('-h', '--help')]  # would print the help and exit
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f'{_rel(page)}: `bioconv {shlex.join(argv)}` does not parse')
