"""deploy/Dockerfile's build stage replayed without Docker, the way Docker runs it: each
ENV, WORKDIR, COPY and RUN in order, in a temporary root that stands for the image's `/`,
with a fresh virtualenv and real pip and setuptools. COPY keeps the checkout's mtimes, as
Docker's does (moby/moby#17175), here set far in the past: a build step that leaves older
or newer copies of the sources behind (the placeholder package an earlier Dockerfile built
to cache its dependencies left empty modules that the real build then shipped) shows up
as an installed module that differs from the checkout's.

The dependencies the Dockerfile installs are found already satisfied in a view of this
checkout's virtualenv (every package but this project and the packaging tools), which the
replayed virtualenv sees after its own site-packages: pip downloads none of them. It
fetches only the build backend that pyproject.toml requires, into an isolated build
environment as in Docker, from the index this machine's pip is configured with."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from counter_service.balancer.config import ROUTING_NAME

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
VENV = "/opt/venv"  # the virtualenv the app and balancer stages copy from the build stage
OLD_MTIME = 946_684_800  # 2000-01-01: older than anything the replay builds
PACKAGES = ("counter_service", "ui")
# Not in the view: this project, and the tools that the replayed virtualenv has its own of.
NOT_DEPENDENCIES = re.compile(
    r"(counter_service|__editable__|pip|setuptools|pkg_resources|_distutils_hack"
    r"|distutils-precedence|wheel)([-._]|$)"
)
PIP_SETTINGS = re.compile(r"PIP_\w+|\w+_proxy|\w+_PROXY|SSL_CERT_\w+|REQUESTS_CA_BUNDLE")
STEP_TIMEOUT_S = 300  # a correctness bound for one RUN, not a speed target

pytestmark = pytest.mark.e2e


def build_stage() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile's `build` stage, in order."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    found: list[tuple[str, str]] = []
    inside = False
    for line in lines:
        if not line or line.startswith("#"):
            continue
        keyword, _, arguments = line.partition(" ")
        if keyword.upper() == "FROM":
            inside = arguments.split()[-1] == "build"
            continue
        if inside:
            found.append((keyword.upper(), arguments.strip()))
    return found


def dependency_view(into: Path) -> Path:
    """A directory of links to every dependency installed in this checkout's venv."""
    site = Path(sysconfig.get_path("purelib"))
    into.mkdir()
    for entry in site.iterdir():
        if not NOT_DEPENDENCIES.match(entry.name) and entry.name != "__pycache__":
            (into / entry.name).symlink_to(entry)
    return into


class Replay:
    """The build stage, run in `root` as if it were the image's `/`."""

    def __init__(self, root: Path, view: Path) -> None:
        self.root, self.view = root, view
        self.workdir = root
        tools = root / "usr-local-bin"
        tools.mkdir()
        (tools / "python").symlink_to(sys.executable)  # the image's python (3.11)
        # pip as this machine configures it (its index, a proxy): only for the build
        # backend, since every dependency is found already satisfied in the view.
        self.env = {name: value for name, value in os.environ.items() if PIP_SETTINGS.match(name)}
        self.env |= {"PATH": f"{tools}:/usr/bin:/bin", "HOME": str(root)}

    def image_path(self, path: str) -> Path:
        """Where a path of the image lives in the replay."""
        return self.root / path.lstrip("/") if path.startswith("/") else self.workdir / path

    def run(self, instruction: str, arguments: str) -> None:
        step = {"ENV": self.set_env, "WORKDIR": self.chdir, "COPY": self.copy, "RUN": self.sh}
        assert instruction in step, f"{instruction} {arguments}: the replay cannot do this"
        step[instruction](arguments)

    def set_env(self, arguments: str) -> None:
        for assignment in shlex.split(arguments):
            name, _, value = assignment.partition("=")
            self.env[name] = value

    def chdir(self, arguments: str) -> None:
        self.workdir = self.image_path(arguments)
        self.workdir.mkdir(parents=True, exist_ok=True)

    def copy(self, arguments: str) -> None:
        *sources, target = shlex.split(arguments)
        assert not target.startswith("--"), arguments
        destination = self.image_path(target)
        for source in sources:
            into_directory = len(sources) > 1 or target.endswith("/")
            copied = destination / Path(source).name if into_directory else destination
            copied.parent.mkdir(parents=True, exist_ok=True)
            if (ROOT / source).is_dir():
                ignore = shutil.ignore_patterns("__pycache__", "*.pyc")  # .dockerignore
                shutil.copytree(ROOT / source, copied, ignore=ignore, dirs_exist_ok=True)
            else:
                shutil.copyfile(ROOT / source, copied)
            age(copied)

    def sh(self, arguments: str) -> None:
        command = re.sub(r"(?<![\w.~-])/(?!dev/)(?=\w)", f"{self.root}/", arguments)
        done = subprocess.run(
            ["/bin/sh", "-c", command],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT_S,
            check=False,
        )
        assert done.returncode == 0, f"RUN {arguments}\n{done.stdout}\n{done.stderr}"
        self.see_dependencies()

    def see_dependencies(self) -> None:
        """Once the virtualenv exists, its Python sees the view after its own packages."""
        venv = self.image_path(VENV)
        for site in venv.glob("lib/python*/site-packages"):
            (site / "zz-dependencies.pth").write_text(f"{self.view}\n")

    def python(self, code: str) -> str:
        """What `code` prints, run by the replayed virtualenv's Python outside any checkout."""
        done = subprocess.run(
            [str(self.image_path(VENV) / "bin" / "python"), "-c", code],
            cwd=self.root,
            env={"PATH": "/usr/bin:/bin", "HOME": str(self.root)},
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT_S,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()


def age(path: Path) -> None:
    """Give `path` and everything under it the old mtime."""
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.utime(item, (OLD_MTIME, OLD_MTIME), follow_symlinks=False)


def sources(package: str) -> dict[str, bytes]:
    """Every file of `package` in the checkout, by its path inside the package."""
    base = ROOT / package
    return {
        str(path.relative_to(base)): path.read_bytes()
        for path in base.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def installed(site: Path, package: str) -> dict[str, bytes]:
    """Every file of `package` installed in `site` (bytecode aside), likewise."""
    base = site / package
    return {
        str(path.relative_to(base)): path.read_bytes()
        for path in base.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def replay_build_stage(work: Path) -> Replay:
    """The build stage, replayed in `work`."""
    (work / "root").mkdir()
    replay = Replay(work / "root", dependency_view(work / "dependencies"))
    for instruction, arguments in build_stage():
        replay.run(instruction, arguments)
    return replay


def installs_every_module_exactly_as_in_the_checkout(image: Replay) -> None:
    (site,) = image.image_path(VENV).glob("lib/python*/site-packages")
    for package in PACKAGES:
        expected, found = sources(package), installed(site, package)
        assert sorted(found) == sorted(expected), package
        differ = [name for name in expected if found[name] != expected[name]]
        assert not differ, f"{package}: installed copies differ from the checkout: {differ}"


def runs_the_command_line_from_its_own_copy(image: Replay) -> None:
    where = image.python(
        "import counter_service, ui; from counter_service.cli import main;"
        " print(counter_service.__file__); print(ui.__file__)"
    )
    venv = str(image.image_path(VENV))
    assert all(line.startswith(venv) for line in where.splitlines()), where
    done = subprocess.run(
        [str(image.image_path(VENV) / "bin" / "counter-service"), "--help"],
        cwd=image.root,
        env={"PATH": "/usr/bin:/bin", "HOME": str(image.root)},
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "serve" in done.stdout


def has_the_routing_file_where_the_balancer_looks(image: Replay) -> None:
    found = image.python(
        "from counter_service.balancer.config import routing_file; print(routing_file())"
    )
    installed_at = image.image_path(VENV) / "share" / "counter-service" / "counter-service.conf"
    assert found == str(installed_at)
    assert installed_at.read_bytes() == (ROOT / "deploy" / "nginx" / ROUTING_NAME).read_bytes()


def test_the_image_ships_the_checkouts_modules_and_runs_them(tmp_path: Path) -> None:
    # One test for one replay (about 15 s): under xdist, separate tests could replay it
    # once per worker.
    image = replay_build_stage(tmp_path)
    installs_every_module_exactly_as_in_the_checkout(image)
    runs_the_command_line_from_its_own_copy(image)
    has_the_routing_file_where_the_balancer_looks(image)
