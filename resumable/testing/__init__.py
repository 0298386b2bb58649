"""Test your own job's crash safety: kill it at each commit, run it again, compare.

``assert_crash_safe([sys.executable, "job.py"], outputs=["out.txt"])`` runs the job once
uninterrupted, then once per crash point killed just before or just after one of its commits
and run again, and fails with the first crash point whose outcome differs (a file written
twice, a counter sent twice). The ``crash_safe`` pytest fixture (registered by installing
``resumable``) calls it on a copy of the test's ``tmp_path``. ``python -m resumable.testing``
reproduces one case. The crash is armed through the environment variable
``RESUMABLE_CRASH_AT``, documented as a testing interface in docs/testing.md.

Not imported by ``import resumable``.
"""

from __future__ import annotations

from ._check import CrashReport, assert_crash_safe

__all__ = ["CrashReport", "assert_crash_safe"]
