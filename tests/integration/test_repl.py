"""The REPL as a user meets it: a real image, a real pseudo-terminal, typed lines.

Each test creates an image with `batos init`, spawns `python -m kernel.repl`
(the body of `batos repl`) on a pty and waits for the prompt after every line.
`BATOS_REPL=plain` makes the console the standard one, so prompts are exact;
one test drives IPython instead.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest
from persistent.mapping import PersistentMapping

from kernel.image import Image

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 30
PROMPT = ">>> "
TID_LINE = r"[0-9a-f]{16}\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\s+"


# `batos init` through this interpreter, from the repository root: the same code as
# the console script, whatever state the installed package is in.
BATOS = [sys.executable, "-c", "from kernel.cli import main; main()"]


@pytest.fixture(scope="module")
def image_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One image made by `batos init` for the module (it converts the model: slow)."""
    directory = tmp_path_factory.mktemp("repl-template") / "image"
    subprocess.run([*BATOS, "init", "--image", str(directory)],
                   check=True, capture_output=True, timeout=300, cwd=REPO)
    return directory


@pytest.fixture
def image_dir(image_template: Path, tmp_path: Path) -> Path:
    """A fresh copy of the module's image for this test."""
    directory = tmp_path / "image"
    shutil.copytree(image_template, directory)
    return directory


def repl_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATOS_")}
    env.update(BATOS_REPL="plain", TERM="dumb", PYTHONUNBUFFERED="1", **extra)
    return env


class Repl:
    """A REPL on a pty: `run` types one line and returns what it printed."""

    def __init__(self, image_dir: Path, *args: str, env: dict[str, str] | None = None,
                 prompt: str = PROMPT) -> None:
        self.prompt = prompt
        self.child = pexpect.spawn(
            sys.executable, ["-m", "kernel.repl", "--image", str(image_dir), *args],
            cwd=str(REPO), env=env or repl_env(), encoding="utf-8",
            timeout=TIMEOUT, dimensions=(40, 250))
        self.banner = self.wait()

    def wait(self) -> str:
        self.child.expect(self.prompt)
        return self.child.before.replace("\r\n", "\n")

    def run(self, line: str) -> str:
        """Type `line`; return the output after its echo, up to the next prompt."""
        self.child.sendline(line)
        echoed, _, output = self.wait().partition("\n")
        assert line[:20] in echoed, (line, echoed)
        return output

    def quit(self) -> str:
        """End the session with Ctrl-D; return what it printed while closing."""
        self.child.sendeof()
        self.child.expect(pexpect.EOF)
        self.child.close()
        assert self.child.exitstatus == 0, self.child.before
        return self.child.before.replace("\r\n", "\n")


SpawnRepl = Callable[..., Repl]


@pytest.fixture
def spawn() -> Iterator[SpawnRepl]:
    """Start REPLs; any still running when the test ends is killed."""
    started: list[Repl] = []

    def start(image_dir: Path, *args: str, **kwargs: Any) -> Repl:
        repl = Repl(image_dir, *args, **kwargs)
        started.append(repl)
        return repl

    yield start
    for repl in started:
        if repl.child.isalive():
            repl.child.terminate(force=True)


def test_read_write_session_commits_and_shows_history(image_dir: Path, spawn: SpawnRepl) -> None:
    repl = spawn(image_dir, "--write")
    assert "read-write" in repl.banner and "commit(" in repl.banner
    listing = repl.run("ls()")
    for container in ("actors", "missions", "mailboxes", "prototypes", "memory"):
        assert f"'{container}': <OOBTree oid 0x" in listing
    repl.run("from persistent.mapping import PersistentMapping")
    repl.run('actors["note"] = PersistentMapping(x=1)')
    assert re.search(r"committed transaction [0-9a-f]{16}", repl.run('commit("added note")'))
    assert re.search(TID_LINE + "added note", repl.run("history(actors)"))
    assert re.search(TID_LINE + "added note", repl.run('history(actors["note"])'))
    assert "discarding" not in repl.quit()

    with Image.open(image_dir, create=False) as image, image.reading() as root:
        assert dict(root["actors"]["note"]) == {"x": 1}
        revisions = image.history(root["actors"]["note"]._p_oid)
    assert [(r.description, r.user) for r in revisions] == [("added note", "batos repl")]


def test_uncommitted_changes_are_discarded(image_dir: Path, spawn: SpawnRepl) -> None:
    repl = spawn(image_dir)
    repl.run('actors["gone"] = 1')
    assert "discarded changes (1 changed object)" in repl.run("abort()")
    assert "'gone'" not in repl.run("ls(actors)")
    repl.run('actors["also_gone"] = 2')
    assert "discarding uncommitted changes (1 changed object)" in repl.quit()

    with Image.open(image_dir, create=False) as image, image.reading() as root:
        assert "gone" not in root["actors"] and "also_gone" not in root["actors"]


def test_inspect_shows_slots_parents_and_method_source(image_dir: Path,
                                                       spawn: SpawnRepl) -> None:
    repl = spawn(image_dir)
    traits = repl.run('inspect(root["prototypes"]["traits"])')
    assert "parents: (none)" in traits
    assert "--- method responds_to ---" in traits
    assert "def responds_to(self, selector):" in traits
    assert "return self.has_slot(selector, inherited=True)" in traits
    obj = repl.run('inspect(root["prototypes"]["object"])')
    assert re.search(r"traits\*\s+<UvmObject prototypes\['traits'\], oid 0x[0-9a-f]+>"
                     r"\s+\(parent\)", obj)  # by name, not as a ghost
    assert "inherited: copy, describe_slots, is_a, responds_to" in obj
    mapping = repl.run('inspect(root["batos"])')
    assert "class: persistent.mapping.PersistentMapping" in mapping
    assert "'genesis_version': 1" in mapping
    repl.quit()


def test_locked_image_opens_read_only_and_refuses_commit(image_dir: Path,
                                                         spawn: SpawnRepl) -> None:
    with Image.open(image_dir, create=False):  # holds the FileStorage lock, as a kernel does
        repl = spawn(image_dir, "--write")
        assert "READ-ONLY: the image is held by a running kernel" in repl.banner
        assert "'actors'" in repl.run("ls()")
        repl.run('actors["note"] = 1')
        error = repl.run('commit("will not happen")')
        assert "error: image" in error and "changes cannot be committed" in error
        assert "Traceback" not in error
        assert repl.run("6 * 7").strip() == "42"  # the prompt survived
        assert "discarding uncommitted changes" in repl.quit()


def test_default_session_is_read_only_and_leaves_the_file_alone(image_dir: Path,
                                                                spawn: SpawnRepl) -> None:
    before = (image_dir / "Data.fs").read_bytes()
    repl = spawn(image_dir)
    assert "READ-ONLY: opened for reading" in repl.banner and "--write" in repl.banner
    repl.run('actors["note"] = 1')
    assert "changes cannot be committed" in repl.run('commit("will not happen")')
    repl.quit()
    assert (image_dir / "Data.fs").read_bytes() == before


def test_at_shows_the_image_as_it_was(image_dir: Path, spawn: SpawnRepl) -> None:
    with Image.open(image_dir, create=False) as image:
        with image.transaction("first") as root:
            root["actors"]["note"] = PersistentMapping(x=1)
        between = dt.datetime.now(dt.UTC)
        with image.transaction("second") as root:
            root["actors"]["note"]["x"] = 2

    repl = spawn(image_dir, "--at", between.isoformat())
    assert "READ-ONLY: a view of the image as it was at" in repl.banner
    assert repl.run('actors["note"]["x"]').strip() == "1"
    assert "changes cannot be committed" in repl.run("commit()")
    repl.quit()

    now = spawn(image_dir)
    assert now.run('actors["note"]["x"]').strip() == "2"
    now.quit()


def test_missing_image_is_a_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "kernel.repl", "--image",
                           str(tmp_path / "nowhere")], cwd=REPO, env=repl_env(),
                          capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert proc.returncode == 2
    assert "error: image" in proc.stderr and "batos init" in proc.stderr


def test_ipython_console(image_dir: Path, tmp_path: Path, spawn: SpawnRepl) -> None:
    pytest.importorskip("IPython")
    env = repl_env(IPY_TEST_SIMPLE_PROMPT="1", IPYTHONDIR=str(tmp_path / "ipython"))
    del env["BATOS_REPL"]
    repl = spawn(image_dir, env=env, prompt=r"In \[\d+\]: ")
    assert "helpers:" in repl.banner
    assert "'missions': <OOBTree" in repl.run("ls()")
    repl.run('actors["n"] = 1')
    assert "discarded changes (1 changed object)" in repl.run("abort()")
    repl.run("from persistent.mapping import PersistentMapping")
    error = repl.run("history(PersistentMapping())")
    assert "error: <PersistentMapping oid (not stored yet)" in error
    assert "Traceback" not in error
    repl.child.sendline("exit")
    repl.child.expect(pexpect.EOF)
    repl.child.close()
    assert repl.child.exitstatus == 0


# -- the console's manners (issue 16, point 6) --------------------------------------------


def test_at_outside_the_history_is_a_typed_error_naming_both_times(image_dir: Path) -> None:
    from kernel.errors import AtOutOfRange
    from kernel.repl import open_session
    from kernel.repl_tools import transaction_span

    with Image.open(image_dir, create=False, read_only=True) as image:
        first, last = transaction_span(image.db.storage)
    assert first is not None and last is not None
    for at in ("2020-01-01", "2099-01-01"):
        with pytest.raises(AtOutOfRange) as caught:
            open_session(image_dir, at)
        assert (caught.value.first, caught.value.last) == (first, last)
        proc = subprocess.run([*BATOS, "repl", "--image", str(image_dir), "--at", at],
                              cwd=REPO, env=repl_env(), capture_output=True, text=True,
                              timeout=TIMEOUT, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        for when in (first, last):  # the one line names the image's first and last times
            assert when.strftime("%Y-%m-%d %H:%M:%S") in proc.stderr


def test_objects_by_name_and_kind_times_as_dates_and_a_read_only_warning(
        image_dir: Path, spawn: SpawnRepl) -> None:
    repl = spawn(image_dir)
    idle = repl.run('root["prototypes"]["mission.IDLE"]')
    assert "prototypes['mission.IDLE']" in idle and "ghost" not in idle
    created = repl.run('root["batos"]["created"]')
    assert re.search(r"\(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\)", created)
    first = repl.run('actors["note"] = 1')
    assert "warning: read-only session" in first
    assert "warning" not in repl.run('actors["other"] = 2')  # once, at the first change
    assert "discarded changes" in repl.run("abort()")
    assert "warning: read-only session" in repl.run('actors["again"] = 3')  # re-armed
    repl.quit()


def test_tab_completes_mapping_and_btree_keys_only(image_dir: Path, spawn: SpawnRepl) -> None:
    repl = spawn(image_dir)
    repl.child.send('x = root["ac\t')  # root is a mapping: its key, not a file name
    repl.child.send(']\r')  # readline closed the quote after the unique key
    repl.wait()
    assert repl.run('x is root["actors"]').strip() == "True"
    repl.child.send('y = root["prototypes"]["mission.ID\t')  # an OOBTree's key
    repl.child.send(']\r')
    repl.wait()
    assert repl.run('y is root["prototypes"]["mission.IDLE"]').strip() == "True"
    repl.quit()


def test_ipython_completion_offers_keys_and_slots_not_magics_or_files(
        image_dir: Path) -> None:
    from IPython.core.completer import provisionalcompleter
    from IPython.core.interactiveshell import InteractiveShell

    from kernel.repl import open_session
    from kernel.repl_tools import install_ipython_completer

    session = open_session(image_dir, None)
    shell = InteractiveShell.instance()

    def lines_after_tab(line: str) -> set[str]:
        """Each line the completions would leave (IPython's own `completions` API)."""
        with provisionalcompleter():
            found = shell.Completer.completions(line, len(line))
            return {line[:c.start] + c.text + line[c.end:] for c in found}

    try:
        ns = session.namespace()
        ns["idle"] = ns["root"]["prototypes"]["mission.IDLE"]
        shell.user_ns.update(ns)
        install_ipython_completer(shell, shell.user_ns)
        assert lines_after_tab("root['ac") == {"root['actors"}
        states = lines_after_tab("root['prototypes']['mission.")
        assert "root['prototypes']['mission.IDLE" in states
        assert all(s.startswith("root['prototypes']['mission.") for s in states)
        assert lines_after_tab("actors['zz") == set()  # no magics, no file names
        slots = lines_after_tab("idle.acc")
        assert {"idle.accepted", "idle.accepts"} <= slots
    finally:
        InteractiveShell.clear_instance()
        session.close()


def test_send_goes_through_the_running_kernel(image_dir: Path, spawn: SpawnRepl) -> None:
    from tests.helpers.kernel import running_kernel

    repl = spawn(image_dir)
    alone = repl.run('send("system", "echo", "hi")')
    assert alone.startswith("error:") and "Traceback" not in alone  # no kernel runs
    with running_kernel(image_dir):
        assert repl.run('send("system", "echo", "hi")').strip() == "'hi'"
    repl.quit()
