"""The code of a ``with checkpointed(...)`` block, as a digest: to say when it was edited.

A completed block is skipped when it is entered again, and a resumed one continues with the
state the earlier run committed. Both are right when the code is the same, and surprising
when it was edited in between (a notebook cell run again after a fix). The run stores the
digest of its block's body (``meta["code"]`` of the operation record) and compares it on
the next entry; what it does then is only to say so (see :mod:`resumable._run_block`).

The digest covers the statements inside the ``with`` block as Python parses them
(:func:`ast.dump`, which leaves out line numbers and comments), not the functions they call.
Only a block whose body calls one of its loops, maps or steps (``cp.iterate(...)``) has one:
those are what a completed block skips, and the rest of its code runs on every entry.
The source is what :mod:`linecache` holds for the caller's file: a script's file, or the
cell IPython registered there. Without source (``python -c``, ``exec`` of a string, a block
entered by hand through ``__enter__``) there is no digest, and nothing is compared.
"""

from __future__ import annotations

import ast
import linecache
import types
from typing import Final

import xxhash

__all__ = ["digest"]

#: (code object, line) -> digest or None. A script's blocks are looked up once each; every
#: run of a notebook cell compiles a new code object, so an edited cell is parsed again.
_digests: dict[tuple[types.CodeType, int], str | None] = {}
#: file name -> (the list linecache returned, its parsed module): a file is parsed once for
#: all its blocks. linecache returns the same list until the file is read again.
_trees: dict[str, tuple[list[str], ast.Module | None]] = {}


def digest(frame: types.FrameType) -> str | None:
    """The digest of the body of the ``with`` statement ``frame`` is entering, if found."""
    if frame.f_globals.get("__name__", "").startswith("resumable."):
        return None  # entered by the library itself (FailsafeManager): not a user's block
    key = (frame.f_code, frame.f_lineno)
    try:
        return _digests[key]
    except KeyError:
        pass
    found = _digests[key] = _find(frame.f_code.co_filename, frame.f_lineno, frame.f_globals)
    return found


def _find(filename: str, line: int, module_globals: dict[str, object]) -> str | None:
    lines = linecache.getlines(filename, module_globals)
    if not lines:
        return None
    cached = _trees.get(filename)
    if cached is not None and cached[0] is lines:
        tree = cached[1]
    else:
        try:
            tree = ast.parse("".join(lines), filename)
        except (SyntaxError, ValueError):
            tree = None  # source that is not what ran (edited since): nothing to compare
        _trees[filename] = (lines, tree)
    node = None if tree is None else _innermost_with(tree, line)
    if node is None or not _skips_work(node):
        return None
    h = xxhash.xxh3_64()
    for statement in node.body:
        h.update(ast.dump(statement).encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()


#: The block's methods that run nothing once its operation completed: what an edit of a
#: completed block's code cannot change.
_SKIPPING: Final = frozenset({"iterate", "enumerate", "lines", "map", "step"})


def _skips_work(node: ast.With | ast.AsyncWith) -> bool:
    """True if the body calls a loop, map or step of the block (``cp.iterate(...)``).

    A block without one runs all its code on every entry, completed or not, and so has no
    edit to report: a block that re-enters an operation only to read ``cp.state`` is one.
    """
    names = {
        item.optional_vars.id for item in node.items if isinstance(item.optional_vars, ast.Name)
    }
    return any(
        isinstance(sub, ast.Call)
        and isinstance(sub.func, ast.Attribute)
        and sub.func.attr in _SKIPPING
        and isinstance(sub.func.value, ast.Name)
        and sub.func.value.id in names
        for statement in node.body
        for sub in ast.walk(statement)
    )


def _innermost_with(tree: ast.Module, line: int) -> ast.With | ast.AsyncWith | None:
    """The ``with`` statement whose header holds ``line``, the innermost if nested."""
    best: ast.With | ast.AsyncWith | None = None
    for node in ast.walk(tree):
        if isinstance(node, ast.With | ast.AsyncWith) and node.lineno <= line:
            header_end = max((item.context_expr.end_lineno or node.lineno) for item in node.items)
            if line <= header_end and (best is None or node.lineno >= best.lineno):
                best = node
    return best
