"""Checks `.ci/run` makes with the interpreter of the virtualenv under test (stdlib only).

  pins NAME==VERSION ...   the installed distributions are exactly these versions
  wheel WHEEL              the wheel holds every tracked module and Cython source/declaration
                           file of the package, and a compiled extension beside every .pyx
  installed                fastdispatch is imported from site-packages (not the source tree), and
                           `info()` reports the compiled key builder and the built driver extension
  versions                 one line of the versions `python -m fastdispatch info` reports
  pytest-line LOG          the closing line of a pytest log ("N passed, ... in Ns")
  total LOG ...            one plain line summing the pytest logs: "ci: N passed, N failed, N skipped"
"""
from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import sysconfig
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What `[tool.setuptools.package-data]` and the packages carry: modules, Cython sources and
# declarations, stubs and the typing marker.
PACKAGED_SUFFIXES = (".py", ".pyx", ".pxd", ".pyi", "py.typed")


def fail(message: str) -> None:
    print(f"ci_check: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def check_pins(pins: list[str]) -> None:
    for pin in pins:
        name, want = pin.split("==")
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            fail(f"{name} is not installed (pinned {want})")
        if have != want:
            fail(f"{name} {have} is installed, the pin is {want}")
    print("pins installed as pinned:", " ".join(pins))


def check_wheel(path: str) -> None:
    names = set(zipfile.ZipFile(path).namelist())
    tracked = subprocess.run(["git", "-C", ROOT, "ls-files", "fastdispatch"], check=True,
                             capture_output=True, text=True).stdout.split()
    missing = [f for f in tracked if f.endswith(PACKAGED_SUFFIXES) and f not in names]
    if missing:
        fail(f"{os.path.basename(path)} lacks {missing}")
    ext_suffix = sysconfig.get_config_var("EXT_SUFFIX")
    no_ext = [f for f in tracked if f.endswith(".pyx") and f[:-4] + ext_suffix not in names]
    if no_ext:
        fail(f"{os.path.basename(path)} has no compiled extension ({ext_suffix}) for {no_ext}")
    built = sorted(f for f in names if f.endswith(ext_suffix))
    print(f"{os.path.basename(path)}: {len(names)} files, every tracked package file, "
          f"extensions {built}")


def check_installed() -> None:
    import fastdispatch

    where = os.path.realpath(fastdispatch.__file__)
    site = {os.path.realpath(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")}
    if not any(where.startswith(s + os.sep) for s in site):
        fail(f"fastdispatch was imported from {where}, not from site-packages {sorted(site)}")
    facts = fastdispatch.info()
    if facts["key_builder"] != "cython":
        fail(f"key builder {facts['key_builder']!r}: {facts['key_builder_reason']}")
    if "extension not built" in facts["driver_launcher_reason"]:
        fail(f"driver launcher: {facts['driver_launcher_reason']}")
    print(f"installed from {os.path.dirname(where)}: key_builder cython "
          f"({facts['key_builder_reason']}), driver extension built "
          f"({facts['driver_launcher_reason']})")


def print_versions() -> None:
    import fastdispatch

    facts = fastdispatch.info()
    fields = ("python", "torch", "triton", "nvidia-cutlass-dsl", "apache-tvm-ffi", "key_builder",
              "dlpack_exchange_api")
    print(" ".join(f"{k}={facts.get(k)}" for k in fields))


def closing_line(log: str) -> str:
    lines = [ln.strip().strip("=").strip() for ln in open(log, errors="replace")]
    closing = [ln for ln in lines if re.search(r"\b(passed|failed|errors?|no tests ran)\b", ln)
               and re.search(r" in [0-9.]+s\b", ln)]
    return closing[-1] if closing else ""


def pytest_line(log: str) -> None:
    print(closing_line(log) or "(no pytest closing line)")


def total(logs: list[str]) -> None:
    counts = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
    for log in logs:
        for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)\b", closing_line(log)):
            counts[word.rstrip("s") if word.startswith("error") else word] += int(n)
    failed = counts["failed"] + counts["error"]
    print(f"ci: {counts['passed']} passed, {failed} failed, {counts['skipped']} skipped")


if __name__ == "__main__":
    command, *rest = sys.argv[1:] or ["help"]
    if command == "pins":
        check_pins(rest)
    elif command == "wheel":
        check_wheel(rest[0])
    elif command == "installed":
        check_installed()
    elif command == "versions":
        print_versions()
    elif command == "pytest-line":
        pytest_line(rest[0])
    elif command == "total":
        total(rest)
    else:
        print(__doc__)
        sys.exit(2)
