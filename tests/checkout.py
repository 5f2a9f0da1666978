"""A copy of this checkout's files, for tests that install or scaffold into a project of their
own (a build or a scaffold writes into the tree it works on), and a repository of its own for
it, to ask git what changed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def copy_project(to: Path) -> Path:
    """A copy of the project's files (what git tracks or would), as a checkout holds them."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for name in listed:
        if (ROOT / name).is_file():
            (to / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, to / name)
    return to


def git(tree: Path, *args: str) -> str:
    """What `git ARGS` prints in the tree."""
    return subprocess.run(
        ["git", "-c", "user.name=tests", "-c", "user.email=tests@example.com", *args],
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def commit_all(tree: Path) -> Path:
    """The tree made a git repository of its own, every file committed (.gitignore applies)."""
    git(tree, "init", "--quiet", "--initial-branch=main")
    git(tree, "add", "--all")
    git(tree, "commit", "--quiet", "--no-verify", "--message", "the project as copied")
    return tree
