"""scripts/apt-install against a stub apt: it must exit 0 after a successful install whether or not a
policy-rc.d was there before, leave an existing one untouched and remove only its own.

The real apt is never touched: stub `apt-get`, `dpkg-query` and `id` come first on PATH, and the policy file is a
temporary path named by APT_INSTALL_POLICY_RC_D.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "scripts" / "apt-install"
DOCKER_POLICY = "#!/bin/sh\n# the image's own policy\nexit 101\n"


def _stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


@pytest.fixture
def fake_apt(tmp_path: Path) -> tuple[dict[str, str], Path, Path]:
    """A PATH with stub tools; returns (environment, policy path, log of what apt-get saw)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    policy = tmp_path / "policy-rc.d"
    log = tmp_path / "apt.log"
    # Every package is missing; apt-get records its arguments and the policy file's state while it runs.
    _stub(bin_dir, "dpkg-query", "exit 1\n")
    _stub(bin_dir, "id", "echo 0\n")
    _stub(
        bin_dir,
        "apt-get",
        f'echo "$* policy=$(test -x {policy} && cat {policy} | tail -n 1)" >> {log}\nexit "${{STUB_APT_RC:-0}}"\n',
    )
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", APT_INSTALL_POLICY_RC_D=str(policy))
    return env, policy, log


def _run(env: dict[str, str], *packages: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *packages], env=env, capture_output=True, text=True, timeout=30)


def test_without_a_policy_file_it_installs_under_its_own_and_removes_it(
    fake_apt: tuple[dict[str, str], Path, Path],
) -> None:
    env, policy, log = fake_apt
    result = _run(env, "gearman-job-server", "sqlite3")
    assert result.returncode == 0, result.stderr
    lines = log.read_text().splitlines()
    assert lines[0].startswith("update")
    assert lines[1].startswith("install -y -q --no-install-recommends gearman-job-server sqlite3")
    # Services were kept from starting during the install, and the script's own policy is gone afterwards.
    assert all(line.endswith("policy=exit 101") for line in lines)
    assert not policy.exists()


def test_an_existing_policy_file_is_left_as_it_was_and_the_exit_status_is_0(
    fake_apt: tuple[dict[str, str], Path, Path],
) -> None:
    env, policy, log = fake_apt
    policy.write_text(DOCKER_POLICY)
    policy.chmod(0o755)
    before = policy.stat()
    result = _run(env, "python3-venv")
    assert result.returncode == 0, result.stderr
    assert "install -y -q --no-install-recommends python3-venv" in log.read_text()
    assert policy.read_text() == DOCKER_POLICY
    after = policy.stat()
    assert (stat.S_IMODE(after.st_mode), after.st_ino, after.st_mtime_ns) == (
        stat.S_IMODE(before.st_mode),
        before.st_ino,
        before.st_mtime_ns,
    )


@pytest.mark.parametrize("existing", [False, True])
def test_a_failed_install_fails_and_still_cleans_up_only_its_own(
    fake_apt: tuple[dict[str, str], Path, Path], existing: bool
) -> None:
    env, policy, _ = fake_apt
    if existing:
        policy.write_text(DOCKER_POLICY)
        policy.chmod(0o755)
    result = _run(dict(env, STUB_APT_RC="100"), "no-such-package")
    assert result.returncode == 100
    assert policy.exists() is existing
    if existing:
        assert policy.read_text() == DOCKER_POLICY


def test_nothing_missing_means_no_apt_at_all(fake_apt: tuple[dict[str, str], Path, Path], tmp_path: Path) -> None:
    env, policy, log = fake_apt
    _stub(tmp_path / "bin", "dpkg-query", "printf installed\n")
    result = _run(env, "gearman-job-server")
    assert result.returncode == 0
    assert not log.exists()
    assert not policy.exists()
