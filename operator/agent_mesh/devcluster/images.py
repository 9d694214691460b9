"""Images without a registry: built offline, cached by content, imported into containerd.

- pause: the static pause binary alone in an image, the sandbox image containerd pins.
- the Python base: Debian's python3 with pip and venv (which Debian splits out), built with
  mmdebstrap from the host's own Debian sources. It stands in for the public Python slim
  image: pip installs into the image's Python (Debian's EXTERNALLY-MANAGED marker is
  removed, as the slim image has none).
- the tailscale image: Tailscale's containerboot, tailscaled and tailscale (the cached
  builds of the tailnet's binaries, devcluster/binaries.py) on an empty root with
  /etc/passwd and /etc/group for the sidecar's uid, tagged with the Tailscale version: the
  image a MeshAgent's sidecar runs on the local node (AGENT_MESH_TAILSCALE_IMAGE).
- the project's image: a real build of the project's Dockerfile by buildah, with the base
  as the PYTHON_IMAGE build argument, no network inside the build (`--network none`), and
  the dependencies from a wheel directory fetched beforehand with the host's pip for the
  base's Python and glibc (PIP_NO_INDEX / PIP_FIND_LINKS build arguments).

buildah keeps its own storage in the cache (vfs driver: no mounts left behind), and every
image leaves it as an archive that `ctr images import` reads. A content key names each
image, so nothing is rebuilt until its inputs change.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent_mesh.devcluster.binaries import TAILSCALE_COMMANDS, TailnetBinaries
from agent_mesh.devcluster.versions import cache_lock, cache_root

Say = Callable[[str], None]

PROJECT_IMAGE = "localhost/agent-mesh"
PAUSE_IMAGE = "localhost/agent-mesh-pause"
BASE_IMAGE = "localhost/agent-mesh-python-base"
TAILSCALE_IMAGE = "localhost/agent-mesh-tailscale"
TAILSCALE_BIN = "/usr/local/bin"
SIDECAR_UID = 65532  # agent_mesh.tailscale.sidecar.SIDECAR_UID (devcluster imports no product)
BASE_PACKAGES = ("python3", "python3-pip", "python3-venv", "passwd", "ca-certificates")
_MMDEBSTRAP_OPTIONS = (
    "--variant=essential",
    "--aptopt=APT::Install-Recommends false",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    '--customize-hook=rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED',
)
# Files of the repository the project's image is built from (its content key).
_PROJECT_FILES = ("Dockerfile", "pyproject.toml", "README.md")
_PROJECT_TREES = ("operator", "examples", "config/samples")
"""Folders the Dockerfile copies (the package, and the example agents and samples it
ships as package data)."""
_EXPECTED_FIRST_BUILD = "about 2-3 minutes once (base 50 s, wheels 10 s, image 70 s)"


class ImageError(RuntimeError):
    """An image could not be built or imported; the message says which step and why."""


@dataclass(frozen=True)
class Image:
    """An image archive in the cache and the name containerd knows it by."""

    name: str
    archive: Path


def _stderr_say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def images_dir() -> Path:
    return cache_root() / "images"


def repository_root() -> Path | None:
    """The source checkout this package runs from (it holds the Dockerfile), if any."""
    root = Path(__file__).resolve().parents[3]
    if all((root / f).is_file() for f in _PROJECT_FILES) and all(
        (root / t).is_dir() for t in _PROJECT_TREES
    ):
        return root
    return None


def project_key(root: Path, base_key: str, wheels_key: str) -> str:
    """Content key of the project's image: its Dockerfile, metadata, package and inputs."""
    parts: list[bytes | str] = [base_key, wheels_key]
    for name in _PROJECT_FILES:
        parts += [name, (root / name).read_bytes()]
    paths = sorted(p for tree in _PROJECT_TREES for p in (root / tree).rglob("*"))
    for path in paths:
        if not path.is_file() or "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo"):
            continue
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        parts += [str(path.relative_to(root)), path.read_bytes()]
    return _digest(*parts)


def requirements(pyproject: Path) -> list[str]:
    """What the image build installs: the build backend's requirements, the project's
    runtime dependencies and its `operator` extra (the image runs the operator)."""
    data = tomllib.loads(pyproject.read_text())
    project = data["project"]
    return [
        *data["build-system"]["requires"],
        *project["dependencies"],
        *project.get("optional-dependencies", {}).get("operator", []),
    ]


def wheel_platforms(glibc: str) -> list[str]:
    """pip platform tags a glibc of that version runs (pip does not widen them itself)."""
    major, minor = (int(x) for x in glibc.split(".")[:2])
    tags = [f"manylinux_{major}_{m}_x86_64" for m in range(minor, 4, -1)]
    return [*tags, "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]


def debian_sources() -> tuple[str, list[str]]:
    """The host's Debian suite and the apt source files mmdebstrap should read."""
    override = os.environ.get("AGENT_MESH_DEBIAN_SOURCES")
    release = _os_release()
    suite = os.environ.get("AGENT_MESH_DEBIAN_SUITE") or release.get("VERSION_CODENAME", "")
    if release.get("ID") != "debian" and not override:
        raise ImageError(
            "the offline Python base is built with mmdebstrap from the host's Debian sources, "
            f"and this host is {release.get('PRETTY_NAME', 'not Debian')}: set "
            "AGENT_MESH_DEBIAN_SOURCES (an apt sources file) and AGENT_MESH_DEBIAN_SUITE"
        )
    if override:
        return suite, [override]
    candidates = [Path("/etc/apt/sources.list")]
    candidates += sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    candidates += sorted(Path("/etc/apt/sources.list.d").glob("*.list"))
    found = []
    for path in candidates:
        with contextlib.suppress(OSError):
            text = path.read_text()
            signed = re.findall(r"(?i)signed-by[:=]\s*(\S+)", text)
            if suite in text and all("debian-archive-keyring" in s for s in signed):
                found.append(str(path))
    if not suite or not found:
        raise ImageError(
            "no Debian apt sources found for the offline Python base (looked in "
            "/etc/apt/sources.list and /etc/apt/sources.list.d); set AGENT_MESH_DEBIAN_SOURCES"
        )
    return suite, found


def _os_release() -> dict[str, str]:
    values = {}
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            key, _, value = line.partition("=")
            values[key] = value.strip().strip('"')
    return values


class Buildah:
    """buildah with storage, run state and configuration of its own, in the cache."""

    def __init__(self, home: Path, run_dir: Path) -> None:
        self.home = home
        self.run_dir = run_dir
        home.mkdir(parents=True, exist_ok=True)
        conf = home / "containers.conf"
        conf.write_text(
            "[network]\n"
            'network_backend = "cni"\n'
            f'network_config_dir = "{home / "networks"}"\n'
            "[engine]\n"
            f'tmp_dir = "{run_dir / "tmp"}"\n'
        )
        self.env = {
            **os.environ,
            "CONTAINERS_CONF": str(conf),
            "CONTAINERS_REGISTRIES_CONF": str(self._registries()),
            "TMPDIR": str(home / "tmp"),
        }
        (home / "tmp").mkdir(exist_ok=True)

    def _registries(self) -> Path:
        path = self.home / "registries.conf"
        path.write_text("unqualified-search-registries = []\n")  # never resolve a short name
        return path

    def __call__(self, *args: str, label: str, capture: bool = True) -> str:
        argv = [
            "buildah",
            "--root",
            str(self.home / "storage"),
            "--runroot",
            str(self.run_dir / "run"),
            "--storage-driver",
            "vfs",
            *args,
        ]
        proc = subprocess.run(
            argv, env=self.env, capture_output=True, text=True, check=False, timeout=1800
        )
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
            raise ImageError(f"{label}: `buildah {args[0]}` failed:\n{tail}")
        return proc.stdout.strip()

    def has(self, name: str) -> bool:
        try:
            return bool(self("images", "-q", name, label="list images"))
        except ImageError:
            return False


class ImageCache:
    """Builds and caches the node's images; one builder at a time per cache."""

    def __init__(self, *, say: Say = _stderr_say) -> None:
        self.dir = images_dir()
        self.say = say
        self.dir.mkdir(parents=True, exist_ok=True)
        self._run_dir = Path(tempfile.mkdtemp(prefix="agent-mesh-buildah-"))
        self.buildah = Buildah(self.dir / "buildah", self._run_dir)

    def close(self) -> None:
        shutil.rmtree(self._run_dir, ignore_errors=True)

    def __enter__(self) -> ImageCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- pause ---------------------------------------------------------------------------

    def pause(self, binary: Path) -> Image:
        key = _digest(binary.read_bytes())
        name = f"{PAUSE_IMAGE}:{key}"
        archive = self.dir / f"pause-{key}.tar"

        def build() -> None:
            self._from_scratch(
                name,
                "pause image",
                add=("copy", "--chmod", "0755", str(binary), "/pause"),
                config=("--entrypoint", '["/pause"]', "--user", "65535:65535"),
            )
            self._export(name, archive)

        self._built_once(archive.is_file, build)
        return Image(name, archive)

    def _from_scratch(
        self, name: str, label: str, *, add: tuple[str, ...], config: tuple[str, ...]
    ) -> None:
        """Commit `name`: a scratch image with one copy or add (`add`: the buildah verb
        and its flags, then source and destination) and a linux/amd64 `config`; the
        working container is removed when a step fails."""
        b = self.buildah
        *verb, source, destination = add
        container = b("from", "scratch", label=label)
        try:
            b(*verb, container, source, destination, label=label)
            b("config", "--os", "linux", "--arch", "amd64", *config, container, label=label)
            b("commit", "-q", "--rm", container, name, label=label)
        except ImageError:
            b("rm", container, label=f"{label} cleanup")
            raise

    # -- tailscale -----------------------------------------------------------------------

    def tailscale(self, binaries: TailnetBinaries) -> Image:
        """The sidecar's image, `localhost/agent-mesh-tailscale:v<version>`: containerboot
        as its entrypoint, tailscaled and tailscale on PATH (containerboot runs both), uid
        and gid 65532 named in /etc/passwd and /etc/group. No CA bundle: the local
        tailnet's control server speaks plain HTTP on the node's bridge."""
        paths = [binaries.tailscale_dir / name for name in TAILSCALE_COMMANDS]
        key = _digest(*(p.read_bytes() for p in paths))
        name = tailscale_image_name(binaries.tailscale_version)
        archive = self.dir / f"tailscale-{binaries.tailscale_version}-{key}.tar"

        def build() -> None:
            with tempfile.TemporaryDirectory(prefix="agent-mesh-tailscale-", dir=self.dir) as tmp:
                rootfs = Path(tmp) / "rootfs.tar"
                tailscale_rootfs(paths, rootfs)
                self._from_scratch(
                    name,
                    "tailscale image",
                    add=("add", "--quiet", str(rootfs), "/"),
                    config=(
                        "--env",
                        f"PATH={TAILSCALE_BIN}:/usr/bin:/bin",
                        "--entrypoint",
                        json.dumps([f"{TAILSCALE_BIN}/containerboot"]),
                        "--user",
                        f"{SIDECAR_UID}:{SIDECAR_UID}",
                    ),
                )
            self._export(name, archive)
            self.buildah("rmi", name, label="drop the exported image from buildah's storage")
            for old in self.dir.glob(f"tailscale-{binaries.tailscale_version}-*.tar"):
                if old != archive:
                    old.unlink(missing_ok=True)

        self._built_once(archive.is_file, build)
        return Image(name, archive)

    # -- the Python base -----------------------------------------------------------------

    def base_key(self) -> str:
        suite, sources = debian_sources()
        contents = [Path(s).read_text() for s in sources]
        return _digest(suite, *BASE_PACKAGES, *_MMDEBSTRAP_OPTIONS, *contents)

    def python_base(self) -> tuple[str, dict[str, str]]:
        """The base image's name in buildah's storage and its Python and glibc versions."""
        key = self.base_key()
        name = f"{BASE_IMAGE}:{key}"
        facts_file = self.dir / f"python-base-{key}.json"
        self._built_once(
            lambda: facts_file.is_file() and self.buildah.has(name),
            lambda: facts_file.write_text(json.dumps(self._build_base(name))),
        )
        return name, json.loads(facts_file.read_text())

    def _build_base(self, name: str) -> dict[str, str]:
        if shutil.which("mmdebstrap") is None:
            raise ImageError("mmdebstrap is missing: apt-get install mmdebstrap")
        suite, sources = debian_sources()
        self.say(f"  [images] building the Python base with mmdebstrap ({suite}, offline after)")
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="agent-mesh-base-", dir=self.dir) as tmp:
            tarball, facts_out = Path(tmp) / "rootfs.tar", Path(tmp) / "facts"
            probe = (
                "import os, sys; print('%d.%d' % sys.version_info[:2]); "
                "print(os.confstr('CS_GNU_LIBC_VERSION').split()[1])"
            )
            argv = [
                "mmdebstrap",
                "--quiet",
                *_MMDEBSTRAP_OPTIONS,
                f"--include={','.join(BASE_PACKAGES)}",
                f'--customize-hook=chroot "$1" python3 -c "{probe}" > {facts_out}',
                suite,
                str(tarball),
                *sources,
            ]
            proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=1200)
            if proc.returncode != 0:
                tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
                raise ImageError(f"mmdebstrap of the Python base failed:\n{tail}")
            python, glibc = facts_out.read_text().split()
            self._from_scratch(
                name,
                "Python base",
                add=("add", "--quiet", str(tarball), "/"),
                config=(
                    "--env",
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "--env",
                    "LANG=C.UTF-8",
                    "--cmd",
                    "python3",
                ),
            )
        self.say(f"  [images] Python {python} base built in {time.monotonic() - started:.0f} s")
        return {"python": python, "glibc": glibc}

    # -- the project's wheels ------------------------------------------------------------

    def wheels(self, root: Path, python: str, glibc: str) -> tuple[Path, str]:
        """Every dependency of the project as wheels for the base's Python and glibc,
        fetched with the host's pip from the package index the host is configured with."""
        reqs = requirements(root / "pyproject.toml")
        key = _digest(python, glibc, *reqs)
        directory = self.dir / f"wheels-{key}"
        self._built_once(
            directory.is_dir, lambda: self._download_wheels(directory, python, glibc, reqs)
        )
        return directory, key

    def _download_wheels(self, directory: Path, python: str, glibc: str, reqs: list[str]) -> None:
        self.say(f"  [images] fetching the project's dependencies as wheels (Python {python})")
        staging = Path(tempfile.mkdtemp(prefix=".wheels-", dir=self.dir))
        abi = "cp" + python.replace(".", "")
        argv = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--dest",
            str(staging),
            "--only-binary=:all:",
            "--python-version",
            python,
            "--implementation",
            "cp",
            "--abi",
            abi,
            "--abi",
            "abi3",
            "--abi",
            "none",
            *[arg for p in wheel_platforms(glibc) for arg in ("--platform", p)],
            *reqs,
        ]
        env = {k: v for k, v in os.environ.items() if k != "PIP_FIND_LINKS"}
        proc = subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=900, env=env
        )
        if proc.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise ImageError(f"pip download of the project's wheels failed:\n{proc.stderr}")
        staging.rename(directory)

    # -- the project's image -------------------------------------------------------------

    def project_cached(self, root: Path) -> bool:
        """True when the project's image for this source is in the cache (no build)."""
        try:
            key = self.base_key()
        except ImageError:
            return False
        facts_file = self.dir / f"python-base-{key}.json"
        if not facts_file.is_file():
            return False
        facts = json.loads(facts_file.read_text())
        reqs = requirements(root / "pyproject.toml")
        wheels_key = _digest(facts["python"], facts["glibc"], *reqs)
        return (self.dir / f"agent-mesh-{project_key(root, key, wheels_key)}.tar").is_file()

    def project(self, root: Path) -> Image:
        """The project's image, built from its Dockerfile unless the cache has it."""
        base, facts = self.python_base()
        wheel_dir, wheels_key = self.wheels(root, facts["python"], facts["glibc"])
        key = project_key(root, base.rsplit(":", 1)[1], wheels_key)
        name = f"{PROJECT_IMAGE}:{key}"
        archive = self.dir / f"agent-mesh-{key}.tar"
        self._built_once(
            archive.is_file, lambda: self._build_project(root, base, wheel_dir, name, archive)
        )
        return Image(name, archive)

    def _build_project(
        self, root: Path, base: str, wheel_dir: Path, name: str, archive: Path
    ) -> None:
        self.say(f"  [images] building the project's image from {root / 'Dockerfile'}")
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="agent-mesh-context-", dir=self.dir) as tmp:
            context = Path(tmp)
            for file in _PROJECT_FILES:
                shutil.copy2(root / file, context / file)
            for tree in _PROJECT_TREES:
                shutil.copytree(
                    root / tree,
                    context / tree,
                    symlinks=True,  # the package's links to examples/ stay links
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"),
                )
            self.buildah(
                "bud",
                "--quiet",
                "--network",
                "none",
                "--isolation",
                "oci",
                "--runtime",
                shutil.which("runc") or "runc",
                "--runtime-flag",
                f"root={self._run_dir / 'runc'}",
                "--pull-never",
                "--layers=false",
                "--volume",
                f"{wheel_dir}:/wheelhouse:ro",
                "--build-arg",
                f"PYTHON_IMAGE={base}",
                "--build-arg",
                "PIP_NO_INDEX=1",
                "--build-arg",
                "PIP_FIND_LINKS=/wheelhouse",
                "--tag",
                name,
                str(context),
                label="the project's image (Dockerfile)",
            )
        self._export(name, archive)
        self.buildah("rmi", name, label="drop the exported image from buildah's storage")
        self._prune(keep=archive)
        self.say(f"  [images] project image built in {time.monotonic() - started:.0f} s")

    # -- internals -----------------------------------------------------------------------

    def _built_once(self, ready: Callable[[], bool], build: Callable[[], object]) -> None:
        """`build` unless `ready()`, under the cache lock: a second builder waits for the
        first, then finds it built."""
        if ready():
            return
        with cache_lock(self.dir / ".lock"):
            if not ready():
                build()

    def _export(self, name: str, archive: Path) -> None:
        partial = archive.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        self.buildah("push", "--quiet", name, f"docker-archive:{partial}:{name}", label="export")
        partial.rename(archive)

    def _prune(self, keep: Path) -> None:
        """Keep one archive of the project's image: the cache holds the newest only."""
        for old in self.dir.glob("agent-mesh-*.tar"):
            if old != keep:
                old.unlink(missing_ok=True)


def tailscale_image_name(version: str) -> str:
    """The tailscale image's name on the node: tagged with the Tailscale release, never
    `latest` (the operator refuses an unpinned sidecar image)."""
    return f"{TAILSCALE_IMAGE}:v{version}"


def tailscale_rootfs(binaries: list[Path], out: Path) -> None:
    """A root filesystem tarball: the binaries in /usr/local/bin (mode 0755, owned by
    root), /etc/passwd and /etc/group naming root and the sidecar's uid, an empty /tmp."""
    texts = {
        "etc/passwd": f"root:x:0:0:root:/root:/sbin/nologin\n"
        f"nonroot:x:{SIDECAR_UID}:{SIDECAR_UID}:nonroot:/tmp:/sbin/nologin\n",
        "etc/group": f"root:x:0:\nnonroot:x:{SIDECAR_UID}:\n",
    }
    with tarfile.open(out, "w") as tar:
        for directory in ("etc", "usr", "usr/local", "usr/local/bin", "tmp"):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        for path, text in texts.items():
            data = text.encode()
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        for binary in binaries:
            info = tar.gettarinfo(str(binary), f"{TAILSCALE_BIN.lstrip('/')}/{binary.name}")
            info.mode, info.uid, info.gid, info.uname, info.gname = 0o755, 0, 0, "root", "root"
            with binary.open("rb") as handle:
                tar.addfile(info, handle)


def expected_first_build() -> str:
    return _EXPECTED_FIRST_BUILD
