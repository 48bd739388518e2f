"""A virtual machine beside a container, both running the vote service (DOCK-05).

    python -m bench.vm_vs_container [--quick] [--accel auto|kvm|tcg]   (make bench runs it)

Writes bench/results/vm_vs_container.json and vm_vs_container.png. Needs root and Docker;
installs qemu-system-x86, busybox-static, kmod and cpio from apt the first time, and builds
the vote image (`docker compose build vote`) if it is missing.

The same service on both sides: the VM's root disk is the vote image's own files
(bench/vm/build-image: `docker export`, Debian's kernel, a busybox initramfs, cached by a
content hash under .cache/vm/), and both run the image's `cloudvote vote` (gunicorn, 2 gevent
workers) as uid 10001 on a read-only root with a tmpfs /tmp, with the same environment and
a Redis URL nothing answers (/healthz needs no dependency). Each gets one CPU, as
compose.yaml gives vote. Both are published on 127.0.0.1: the container with `-p`, the VM
with QEMU's user-mode network (`hostfwd`).

- start: wall clock from the launch command (`docker run -d`, `qemu-system-x86_64`) to the
  first 200 from /healthz, polled every 20 ms. VM and container take turns, N rounds.
- memory per instance: after 20 /healthz requests and 2 s of rest, the proportional set
  size (PSS) of what runs the instance: the QEMU process for the VM (its guest's RAM is
  memory QEMU has touched, so this is all the host gives it), the container's processes
  (from its cgroup) for the container. The container's cgroup usage, which also counts page
  cache it was the first to read, is recorded beside it. The VM gets the smallest RAM
  (`-m`) it runs the service in, found by trying smaller sizes until one fails.
- instances in 4 GiB: 4 GiB / PSS per instance, then checked: that many instances are
  started one after another inside one memory cgroup limited to 4 GiB, and each must
  answer /healthz, with no OOM kill, after the last one started. Bounded (--max-*).

Acceleration: KVM when /dev/kvm is a hardware KVM. On a machine whose /dev/kvm is
kvm_pvm (a pagetable-based KVM for nested guests, as on this project's build machines), an
unmodified Debian kernel does not boot: the guest touches new memory at about 2 MB/s (the
kernel's decompressor alone would take minutes), and with QEMU faulting the RAM in first
(-mem-prealloc) the boot stops with "KVM internal error ... emulation failure" on
cmpxchg16b, then on xrstor; with both hidden from the guest it printed nothing in 70 s.
There the VM runs under QEMU's software emulation (TCG), and the JSON says so: its start
time is then an upper bound, and QEMU's memory includes TCG's translation cache, which is
recorded on its own.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.servers import free_port
from tests.support.waiting import ConditionTimeout, wait_until

from bench.machine import describe_machine

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("results")
BUILD_SCRIPT = Path(__file__).with_name("vm") / "build-image"
APT_PACKAGES = ("qemu-system-x86", "busybox-static", "kmod", "cpio", "e2fsprogs")
BUDGET_BYTES = 4 * 1024**3
LABEL = "org.cloudvote.bench=vm_vs_container"
# The container's settings, passed to the VM on its kernel command line (bench/vm/guest-init).
SERVICE_ENV = {"WEB_CONCURRENCY": "2", "REDIS_URL": "redis://127.0.0.1:1/0"}
# compose.yaml's vote limits: one CPU, 256M; the VM gets one vCPU.
CONTAINER_LIMITS = ("--cpus", "1", "--memory", "256m", "--pids-limit", "256")
VM_MEMORY_STEPS_MIB = (256, 224, 192, 176, 160, 144, 128)
TCG_CACHE_MIB = 32
SERVICE_PORT = 5000


def default_image() -> str:
    """The vote image compose.yaml builds: cloudvote-vote:<CLOUDVOTE_VERSION or 0.1.0>."""
    return f"cloudvote-vote:{os.environ.get('CLOUDVOTE_VERSION', '0.1.0')}"


def _run(command: list[str], timeout: float = 600, **kwargs: Any) -> str:
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stderr[-2000:]}")
    output: str = done.stdout
    return output


# --- setup -------------------------------------------------------------------------------


def ensure_packages() -> list[str]:
    """Install the Debian packages the VM needs, once; returns what was installed."""
    missing = [
        package
        for package in APT_PACKAGES
        if "install ok installed"
        not in subprocess.run(
            ["dpkg-query", "-W", "-f", "${Status}", package],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
    ]
    if missing:
        print(f"vm-vs-container: apt-get install {' '.join(missing)}", flush=True)
        environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        _run(["apt-get", "install", "-y", "--no-install-recommends", *missing], env=environment)
    return missing


def ensure_image(image: str) -> None:
    """Build the vote image with compose (and .airgap.env, where a registry is missing)."""
    found = subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False)
    if found.returncode == 0:
        return
    if image != default_image():
        raise RuntimeError(f"no image {image}")
    environment = dict(os.environ)
    airgap = REPO / ".airgap.env"
    if airgap.exists():
        for line in airgap.read_text().splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                name, value = line.split("=", 1)
                environment[name.strip()] = value.strip()
    print(f"vm-vs-container: docker compose build vote ({image})", flush=True)
    _run(["docker", "compose", "build", "vote"], cwd=REPO, env=environment, timeout=900)


def build_vm(image: str) -> tuple[Path, dict[str, Any]]:
    started = time.monotonic()
    done = subprocess.run(
        [str(BUILD_SCRIPT), image], capture_output=True, text=True, timeout=900, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench/vm/build-image failed: {done.stderr[-2000:]}")
    directory = Path(done.stdout.strip().splitlines()[-1])
    build = json.loads((directory / "build.json").read_text())
    build["cached"] = "cached:" in done.stderr
    build["seconds"] = round(time.monotonic() - started, 1)
    build["root_img_mib"] = round((directory / "root.img").stat().st_size / 2**20)
    return directory, build


def choose_accel(requested: str) -> tuple[str, str]:
    """KVM where /dev/kvm can run an unmodified kernel; TCG otherwise, with the reason."""
    if requested != "auto":
        return requested, "chosen with --accel"
    if not Path("/dev/kvm").exists():
        return "tcg", "no /dev/kvm"
    if Path("/sys/module/kvm_pvm").exists():
        return "tcg", (
            "/dev/kvm is kvm_pvm (pagetable-based KVM for nested guests): an unmodified "
            "Debian kernel touches new memory at about 2 MB/s under it, and with the RAM "
            "pre-faulted stops with 'KVM internal error ... emulation failure' (cmpxchg16b, "
            "then xrstor)"
        )
    return "kvm", "hardware KVM"


# --- instances ---------------------------------------------------------------------------


def healthz(port: int) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status
    finally:
        connection.close()


def smaps_rollup(pid: int) -> dict[str, int]:
    """KiB per field of /proc/PID/smaps_rollup (Rss, Pss, Pss_Anon, ...)."""
    figures: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        figures[name] = int(value.split()[0])
    return figures


@dataclass
class Vm:
    """One QEMU process booting the cached kernel, initramfs and read-only root disk."""

    directory: Path
    accel: str
    memory_mib: int
    workdir: Path
    cgroup: Path | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def console(self) -> Path:
        return self.workdir / f"vm-{self.port}.console"

    def command(self) -> list[str]:
        settings = " ".join(f"{name}={value}" for name, value in SERVICE_ENV.items())
        accel = (
            ["-accel", "kvm", "-cpu", "host"]
            if self.accel == "kvm"
            else ["-accel", f"tcg,tb-size={TCG_CACHE_MIB}", "-cpu", "max"]
        )
        # -nodefaults: no VGA, no floppy or CD-ROM, no default network card; only what is
        # named here. The root disk is shared read-only by every VM, like an image's layers.
        return [
            "qemu-system-x86_64", *accel, "-M", "pc", "-smp", "1",
            "-m", f"{self.memory_mib}M", "-nodefaults", "-no-user-config",
            "-display", "none", "-no-reboot", "-serial", f"file:{self.console}",
            "-kernel", str(self.directory / "vmlinuz"),
            "-initrd", str(self.directory / "initrd.img"),
            "-append", f"console=ttyS0 quiet panic=-1 {settings}",
            "-drive", f"id=root,file={self.directory / 'root.img'},format=raw,if=none,readonly=on",
            "-device", "virtio-blk-pci,drive=root",
            "-netdev", f"user,id=net,hostfwd=tcp:127.0.0.1:{self.port}-:{SERVICE_PORT}",
            "-device", "virtio-net-pci,netdev=net",
        ]  # fmt: skip

    def launch(self) -> None:
        command = self.command()
        if self.cgroup is not None:
            # Join the cgroup before exec, so every page QEMU touches is charged to it.
            command = ["sh", "-c", f'echo $$ > {self.cgroup}/cgroup.procs && exec "$@"', "sh"]
            command += self.command()
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / f"vm-{self.port}.err", "wb"),  # noqa: SIM115
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def memory(self) -> dict[str, Any]:
        assert self.process is not None
        figures = smaps_rollup(self.process.pid)
        guest, cache = _qemu_regions(self.process.pid, self.memory_mib)
        return {
            "pss_mib": round(figures["Pss"] / 1024, 1),
            "rss_mib": round(figures["Rss"] / 1024, 1),
            "guest_ram_resident_mib": round(guest / 1024, 1),
            "tcg_cache_resident_mib": round(cache / 1024, 1) if self.accel == "tcg" else None,
        }

    def out_of_memory(self) -> bool:
        text = self.console.read_text(errors="replace") if self.console.exists() else ""
        return "Out of memory" in text or "Kernel panic" in text

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _qemu_regions(pid: int, memory_mib: int) -> tuple[int, int]:
    """Resident KiB of the guest's RAM mapping and of TCG's translation cache."""
    guest = cache = 0
    size = 0
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            start, end = (int(part, 16) for part in line.split()[0].split("-"))
            size = (end - start) // 1024
        elif line.startswith("Rss:"):
            resident = int(line.split()[1])
            if size == memory_mib * 1024:
                guest = max(guest, resident)
            elif abs(size - TCG_CACHE_MIB * 1024) <= 64:  # its size, less a guard page
                cache = max(cache, resident)
    return guest, cache


@dataclass
class Container:
    """One `docker run` of the vote image with compose.yaml's hardening and vote limits."""

    image: str
    cgroup_parent: str | None = None
    port: int = field(default_factory=free_port)
    name: str = ""

    def launch(self) -> None:
        self.name = f"cloudvote-vmbench-{self.port}"
        parent = ["--cgroup-parent", self.cgroup_parent] if self.cgroup_parent else []
        environment = [
            item for name, value in SERVICE_ENV.items() for item in ("-e", f"{name}={value}")
        ]
        _run(
            [
                "docker", "run", "-d", "--name", self.name, "--label", LABEL,
                "--read-only", "--tmpfs", "/tmp:size=64m", "--cap-drop", "ALL",
                "--security-opt", "no-new-privileges", *CONTAINER_LIMITS, *parent,
                "-p", f"127.0.0.1:{self.port}:{SERVICE_PORT}", *environment, self.image,
            ],
            timeout=120,
        )  # fmt: skip

    def alive(self) -> bool:
        state = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Running}}", self.name],
            capture_output=True,
            text=True,
            check=False,
        )
        return state.stdout.strip() == "true"

    def _cgroup(self) -> Path:
        pid = _run(["docker", "inspect", "-f", "{{.State.Pid}}", self.name]).strip()
        unified = Path("/sys/fs/cgroup")
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(","):
                return Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            if not controllers:  # cgroup v2: "0::/path"
                unified = unified / path.lstrip("/")
        return unified

    def memory(self) -> dict[str, Any]:
        cgroup = self._cgroup()
        pids = [int(pid) for pid in (cgroup / "cgroup.procs").read_text().split()]
        rollups = [smaps_rollup(pid) for pid in pids]
        usage_file = cgroup / "memory.usage_in_bytes"
        usage = int(usage_file.read_text()) if usage_file.exists() else None
        stat_file = cgroup / "memory.stat"
        stat = dict(line.split() for line in stat_file.read_text().splitlines())
        return {
            "pss_mib": round(sum(one["Pss"] for one in rollups) / 1024, 1),
            "rss_mib": round(sum(one["Rss"] for one in rollups) / 1024, 1),
            "processes": len(pids),
            "cgroup_usage_mib": round(usage / 2**20, 1) if usage is not None else None,
            "cgroup_rss_mib": round(int(stat.get("rss", stat.get("anon", 0))) / 2**20, 1),
            "cgroup_cache_mib": round(int(stat.get("cache", stat.get("file", 0))) / 2**20, 1),
        }

    def out_of_memory(self) -> bool:
        return (
            _run(["docker", "inspect", "-f", "{{.State.OOMKilled}}", self.name]).strip() == "true"
        )

    def stop(self) -> None:
        if self.name:
            subprocess.run(
                ["docker", "rm", "-f", self.name], capture_output=True, timeout=60, check=False
            )


Instance = Vm | Container


def start_timed(instance: Instance, timeout: float) -> float:
    """Seconds from the launch command to the first 200 from /healthz."""
    started = time.monotonic()
    instance.launch()

    def answered() -> int | str:
        # A text ends the wait: the instance is gone or will never answer. (A guest short
        # of RAM kills a worker and gunicorn starts another, for ever.)
        if not instance.alive():
            return "exited before /healthz answered"
        if isinstance(instance, Vm) and instance.out_of_memory():
            return "the guest ran out of memory"
        return healthz(instance.port)

    outcome = wait_until(
        answered,
        lambda status: status == 200 or isinstance(status, str),
        timeout=timeout,
        interval=0.02,
        what=f"/healthz on port {instance.port}",
    )
    if isinstance(outcome, str):
        raise ConditionTimeout(f"port {instance.port}: {outcome}")
    return time.monotonic() - started


def settle(instance: Instance) -> bool:
    """20 requests (both workers serve some), 2 s of rest; True if every one got 200."""
    statuses = []
    for _ in range(20):
        try:
            statuses.append(healthz(instance.port))
        except OSError:
            statuses.append(0)
    time.sleep(2)
    return all(status == 200 for status in statuses) and instance.alive()


# --- the measurements --------------------------------------------------------------------


def find_smallest_vm(
    directory: Path, accel: str, workdir: Path, timeout: float
) -> tuple[int, list[dict[str, Any]]]:
    """Try smaller and smaller guests; the last that serves /healthz is the smallest."""
    tried: list[dict[str, Any]] = []
    smallest = 0
    for memory_mib in VM_MEMORY_STEPS_MIB:
        vm = Vm(directory, accel, memory_mib, workdir)
        entry: dict[str, Any] = {"memory_mib": memory_mib}
        try:
            entry["start_s"] = round(start_timed(vm, timeout), 2)
            entry["serves"] = settle(vm) and not vm.out_of_memory()
        except ConditionTimeout as error:
            entry["serves"] = False
            entry["why"] = str(error)[:200]
        finally:
            vm.stop()
        entry["out_of_memory"] = vm.out_of_memory()
        tried.append(entry)
        print(f"vm-vs-container: guest RAM {json.dumps(entry)}", flush=True)
        if not entry["serves"]:
            break
        smallest = memory_mib
    if not smallest:
        raise RuntimeError(f"the VM did not serve /healthz at {VM_MEMORY_STEPS_MIB[0]} MiB")
    return smallest, tried


def measure_rounds(
    make: dict[str, Callable[[], Instance]], rounds: int, timeout: float
) -> dict[str, list[dict[str, Any]]]:
    """VM and container take turns, the order swapped every round."""
    samples: dict[str, list[dict[str, Any]]] = {kind: [] for kind in make}
    kinds = list(make)
    for round_number in range(rounds):
        order = kinds if round_number % 2 == 0 else kinds[::-1]
        for kind in order:
            instance = make[kind]()
            try:
                seconds = start_timed(instance, timeout)
                if not settle(instance):
                    raise RuntimeError(f"{kind} stopped answering /healthz after it started")
                sample = {"start_s": round(seconds, 3), **instance.memory()}
            finally:
                instance.stop()
            samples[kind].append(sample)
            print(f"vm-vs-container: round {round_number + 1} {kind} {sample}", flush=True)
    return samples


@contextlib.contextmanager
def memory_cgroup(name: str, limit: int) -> Iterator[Path | None]:
    """A cgroup v1 memory cgroup with a hard limit, or None where that is not possible."""
    path = Path("/sys/fs/cgroup/memory") / name
    try:
        path.mkdir(exist_ok=True)
        (path / "memory.limit_in_bytes").write_text(str(limit))
    except OSError:
        yield None
        return
    try:
        yield path
    finally:
        # Docker's own child cgroups (one per container) go with their containers; wait
        # for them, and for the VMs' QEMU processes to exit, before removing the parent.
        wait_until(
            lambda: (
                not (path / "cgroup.procs").read_text().split()
                and not [child for child in path.iterdir() if child.is_dir()]
            ),
            timeout=60,
            what=f"{path} empty",
        )
        path.rmdir()


def memory_available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pack(
    kind: str,
    make: Callable[[Path | None], Instance],
    count: int,
    timeout: float,
) -> dict[str, Any]:
    """Start `count` instances in one 4 GiB memory cgroup; do they all still answer?"""
    before = memory_available_mib()
    instances: list[Instance] = []
    started = time.monotonic()
    failure = None
    with memory_cgroup(f"cloudvote-bench-{kind}", BUDGET_BYTES) as cgroup:
        try:
            for number in range(count):
                instance = make(cgroup)
                instances.append(instance)
                try:
                    start_timed(instance, timeout)
                except ConditionTimeout as error:
                    failure = f"instance {number + 1} did not answer: {error}"[:300]
                    break
                if (number + 1) % 10 == 0:
                    print(f"vm-vs-container: {kind}: {number + 1} of {count} up", flush=True)
            time.sleep(5)
            answering = 0
            for instance in instances:
                with contextlib.suppress(OSError):
                    answering += healthz(instance.port) == 200
            record: dict[str, Any] = {
                "target": count,
                "started": len(instances),
                "answering_healthz": answering,
                "seconds_to_start_all": round(time.monotonic() - started, 1),
                "host_memory_used_mib": round(before - memory_available_mib()),
                "enforced_by_cgroup": cgroup is not None,
            }
            if cgroup is not None:
                record["cgroup_usage_mib"] = round(
                    int((cgroup / "memory.usage_in_bytes").read_text()) / 2**20
                )
                record["cgroup_peak_mib"] = round(
                    int((cgroup / "memory.max_usage_in_bytes").read_text()) / 2**20
                )
                control = dict(
                    line.split()
                    for line in (cgroup / "memory.oom_control").read_text().splitlines()
                )
                record["oom_kills"] = int(control.get("oom_kill", 0))
            record["out_of_memory"] = sum(instance.out_of_memory() for instance in instances)
            if failure:
                record["failure"] = failure
            return record
        finally:
            for instance in instances:
                instance.stop()


def remove_leftovers() -> None:
    """Containers a crashed earlier run left behind (only ours: they carry LABEL)."""
    leftover = _run(["docker", "ps", "-aq", "--filter", f"label={LABEL}"]).split()
    if leftover:
        _run(["docker", "rm", "-f", *leftover])


def summarise(samples: list[dict[str, Any]], key: str) -> dict[str, float]:
    values = [sample[key] for sample in samples if sample.get(key) is not None]
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def measure_vm_vs_container(
    quick: bool = False,
    accel: str = "auto",
    max_containers: int = 150,
    max_vms: int = 40,
    results: Path = RESULTS,
    image: str | None = None,
) -> dict[str, Any]:
    image = image or default_image()
    installed = ensure_packages()
    ensure_image(image)
    directory, build = build_vm(image)
    accel, why = choose_accel(accel)
    rounds = 2 if quick else 5
    # TCG boots the kernel in software: give it far longer to answer.
    vm_timeout = 60.0 if accel == "kvm" else 240.0
    print(f"vm-vs-container: VM under {accel} ({why}); build {json.dumps(build)}", flush=True)
    remove_leftovers()
    figures: dict[str, Any] = {
        "quick": quick,
        "image": image,
        "image_id": build["image_id"],
        "apt_installed_now": installed,
        "versions": {
            "docker": _run(["docker", "version", "--format", "{{.Server.Version}}"]).strip(),
            "qemu": _run(["qemu-system-x86_64", "--version"]).splitlines()[0],
            "guest_kernel": f"{build['kernel_package']} {build['kernel_version']}",
            "host_kernel": os.uname().release,
        },
        "vm_build": build,
        "vm_accel": accel,
        "vm_accel_reason": why,
        "service": {
            "command": "cloudvote vote (gunicorn, gevent workers)",
            "environment": SERVICE_ENV,
            "container_flags": [*CONTAINER_LIMITS, "--read-only", "--tmpfs", "/tmp:size=64m"],
            "vm": "1 vCPU, read-only virtio root disk, tmpfs /tmp, user-mode network",
        },
    }
    with tempfile.TemporaryDirectory(prefix="cloudvote-vmbench-") as scratch:
        workdir = Path(scratch)
        smallest, tried = find_smallest_vm(directory, accel, workdir, vm_timeout)
        figures["vm_memory_search"] = {"tried": tried, "smallest_mib": smallest}
        makers: dict[str, Callable[[], Instance]] = {
            "vm": lambda: Vm(directory, accel, smallest, workdir),
            "container": lambda: Container(image),
        }
        samples = measure_rounds(makers, rounds, vm_timeout)
        figures["rounds"] = rounds
        figures["samples"] = samples
        for kind, kind_samples in samples.items():
            figures[kind] = {
                "start_s": summarise(kind_samples, "start_s"),
                "pss_mib": summarise(kind_samples, "pss_mib"),
                "rss_mib": summarise(kind_samples, "rss_mib"),
            }
        figures["vm"]["guest_ram_mib"] = smallest
        if accel == "tcg":
            cache = summarise(samples["vm"], "tcg_cache_resident_mib")["median"]
            figures["vm"]["tcg_cache_mib"] = cache
            figures["vm"]["pss_without_tcg_cache_mib"] = round(
                figures["vm"]["pss_mib"]["median"] - cache, 1
            )
        figures["container"]["cgroup_usage_mib"] = summarise(
            samples["container"], "cgroup_usage_mib"
        )
        fits = {}
        for kind, cap in (("container", max_containers), ("vm", max_vms)):
            per = figures[kind]["pss_mib"]["median"]
            estimate = math.floor(BUDGET_BYTES / 2**20 / per)
            target = min(estimate, cap if not quick else min(cap, 6))
            fits[kind] = {"per_instance_mib": per, "estimate": estimate, "capped_at": cap}
            # Leave the machine 2 GiB beyond the budget, whatever else is running.
            if memory_available_mib() < BUDGET_BYTES / 2**20 + 2048:
                fits[kind]["skipped"] = "less than 6 GiB available"
                continue
            print(f"vm-vs-container: packing {target} {kind}s into 4 GiB", flush=True)
            if kind == "vm":
                fits[kind]["check"] = pack(
                    kind,
                    lambda cgroup: Vm(directory, accel, smallest, workdir, cgroup),
                    target,
                    vm_timeout * 2,
                )
            else:
                fits[kind]["check"] = pack(
                    kind,
                    lambda cgroup: Container(image, f"/{cgroup.name}" if cgroup else None),
                    target,
                    120,
                )
            print(f"vm-vs-container: {kind} fit {json.dumps(fits[kind])}", flush=True)
        figures["fit_in_4_gib"] = fits
    remove_leftovers()
    plot(figures, results / "vm_vs_container.png")
    return figures


# --- the plot ----------------------------------------------------------------------------


def plot(figures: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    accel = figures["vm_accel"]
    labels = ["container", f"VM ({accel.upper()})"]
    colors = ["#2f6fdf", "#e67e22"]
    figure, (start_ax, memory_ax, fit_ax) = plt.subplots(1, 3, figsize=(15, 4.5))

    def bars(axes: Any, key: str, unit: str) -> None:
        # Bars: medians over the rounds; whiskers: their range.
        shown = [figures["container"][key], figures["vm"][key]]
        medians = [one["median"] for one in shown]
        whiskers = [
            [one["median"] - one["min"] for one in shown],
            [one["max"] - one["median"] for one in shown],
        ]
        drawn = axes.bar(labels, medians, yerr=whiskers, capsize=4, color=colors)
        axes.bar_label(drawn, labels=[f"{value:g} {unit}" for value in medians], fontsize=9)

    bars(start_ax, "start_s", "s")
    start_ax.set_title(f"start → first 200 from /healthz ({figures['rounds']} rounds)")
    start_ax.set_ylabel("seconds")
    bars(memory_ax, "pss_mib", "MiB")
    memory_ax.set_title(
        f"memory per instance (PSS; VM with {figures['vm']['guest_ram_mib']} MiB RAM)"
    )
    memory_ax.set_ylabel("MiB")
    fits = figures["fit_in_4_gib"]
    estimates = [fits["container"]["estimate"], fits["vm"]["estimate"]]
    checked = [
        fits[kind].get("check", {}).get("answering_healthz", 0) for kind in ("container", "vm")
    ]
    places = range(2)
    fit_ax.bar(
        [x - 0.2 for x in places], estimates, width=0.4, color="#9aa7b6", label="4 GiB ÷ PSS"
    )
    drawn = fit_ax.bar(
        [x + 0.2 for x in places], checked, width=0.4, color=colors, label="started, answering"
    )
    fit_ax.bar_label(drawn, fontsize=9)
    fit_ax.set_xticks(list(places), labels)
    fit_ax.set_title("instances in one 4 GiB memory cgroup")
    fit_ax.legend()
    figure.tight_layout()
    out.parent.mkdir(exist_ok=True)
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds, at most 6 per pack")
    parser.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto")
    parser.add_argument("--max-containers", type=int, default=150)
    parser.add_argument("--max-vms", type=int, default=40)
    parser.add_argument("--image", help="the vote image both run (default: compose's vote image)")
    args = parser.parse_args()
    started = time.time()
    figures = measure_vm_vs_container(
        args.quick, args.accel, args.max_containers, args.max_vms, image=args.image
    )
    record = {
        "harness": "vm_vs_container",
        "measured_at": started,
        "machine": describe_machine(),
        **figures,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "vm_vs_container.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"vm-vs-container: wrote {RESULTS / 'vm_vs_container.json'}", flush=True)


if __name__ == "__main__":
    main()
