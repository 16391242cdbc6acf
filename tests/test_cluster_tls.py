"""Grading on a Dask cluster takes only the course's own certificates (autograder/CLUSTER.md).

Without them nobody can submit work to the scheduler (the workers run it as root) or join as
a worker (and receive students' notebooks): a process that holds a certificate of another CA
is refused at the TLS handshake, even when it trusts the course's CA (``ca.pem`` is no secret).
``course grade`` itself refuses a scheduler without TLS unless told ``--insecure-scheduler``.
"""

from __future__ import annotations

import stat
import time

import pytest
from dask_cluster import ASSIGNMENT, ROOT, batch, start, stop, tls_args, tls_cluster, wait_for

from autograder.cli import main
from autograder.cluster import ClusterError
from autograder.cluster_tls import ROLES, make_certs, scheduler_security, tls_security
from autograder.exercises import exercise_for
from autograder.grade import grade
from autograder.store.results import read_results


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """The course's certificates, and those of another CA (someone else's)."""
    folder = tmp_path_factory.mktemp("tls")
    make_certs(folder / "course")
    make_certs(folder / "rogue")
    return folder / "course", folder / "rogue"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, certs):
    """A TLS scheduler and workers "a" and "b" with the course's certificates; yields
    (address, the folder of its logs). One per module (its tests share a group, conftest.py)."""
    folder = tmp_path_factory.mktemp("cluster")
    with tls_cluster(folder, certs[0]) as (address, _):
        yield address, folder


def _log(folder, name: str) -> str:
    return (folder / name).read_text(errors="replace")


# --------------------------------------------------------------------------- the certificates


def test_the_command_makes_a_ca_and_a_certificate_per_role(tmp_path, capsys):
    from cryptography import x509

    folder = tmp_path / "certs"
    assert main(["cluster-certs", str(folder)]) == 0
    assert "dask worker tls://HOST:8786 --tls-ca-file" in capsys.readouterr().out
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    ca = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for role in ROLES:
        assert stat.S_IMODE((folder / f"{role}-key.pem").stat().st_mode) == 0o600
        cert = x509.load_pem_x509_certificate((folder / f"{role}.pem").read_bytes())
        cert.verify_directly_issued_by(ca)  # raises if the course's CA did not sign it
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert stat.S_IMODE((folder / "ca-key.pem").stat().st_mode) == 0o600

    before = (folder / "ca.pem").read_bytes()
    assert main(["cluster-certs", str(folder)]) == 2  # a CA is never replaced by accident
    assert "ca.pem exists" in capsys.readouterr().err
    assert (folder / "ca.pem").read_bytes() == before
    assert main(["cluster-certs", str(folder), "--force"]) == 0
    assert (folder / "ca.pem").read_bytes() != before


def test_a_key_others_can_read_is_refused(tmp_path):
    make_certs(tmp_path)
    assert tls_security(tmp_path).require_encryption
    (tmp_path / "client-key.pem").chmod(0o644)
    with pytest.raises(ClusterError, match="readable by other users"):
        tls_security(tmp_path)


def test_missing_certificates_say_how_to_make_them(tmp_path, capsys):
    rc = main(["grade", ASSIGNMENT, str(tmp_path / "subs"), "--out", str(tmp_path / "out"),
               "--scheduler", "tls://127.0.0.1:9", "--tls", str(tmp_path / "none")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no TLS certificates" in err and f"course cluster-certs {tmp_path / 'none'}" in err


# --------------------------------------------------------------------------- no TLS, no grading


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:9", "127.0.0.1:9"])
def test_grade_refuses_a_scheduler_without_tls(tmp_path, capsys, address):
    start_time = time.monotonic()
    rc = main(["grade", ASSIGNMENT, str(tmp_path / "subs"), "--out", str(tmp_path / "out"),
               "--scheduler", address])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"refusing the unencrypted Dask scheduler {address}" in err
    assert "run code on the grading machines" in err
    assert "--scheduler tls://HOST:8786" in err and "--insecure-scheduler" in err
    assert time.monotonic() - start_time < 30  # refused before any connection is tried
    assert not (tmp_path / "out").exists()


def test_grade_itself_refuses_tcp_without_an_explicit_security(tmp_path):
    batch(tmp_path / "subs", 1)
    with pytest.raises(ClusterError, match="refusing the unencrypted"):
        grade(ASSIGNMENT, tmp_path / "subs", tmp_path / "out", root=ROOT,
              scheduler="tcp://127.0.0.1:9", isolate=False)
    assert read_results(tmp_path / "out") == []


@pytest.mark.slow
def test_insecure_scheduler_is_the_explicit_way_to_tcp(tmp_path, capsys):
    batch(tmp_path / "subs", 1)
    assert not scheduler_security("tcp://127.0.0.1:9", insecure=True).require_encryption
    rc = main(["grade", ASSIGNMENT, str(tmp_path / "subs"), "--out", str(tmp_path / "out"),
               "--no-isolation", "--scheduler", "tcp://127.0.0.1:9", "--insecure-scheduler"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "WARNING: --insecure-scheduler" in err
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in err  # it did try


# --------------------------------------------------------------------------- on a TLS cluster


@pytest.mark.slow
def test_a_client_without_the_courses_certificate_is_refused(cluster, certs):
    from distributed import Client
    from distributed.security import Security

    address, folder = cluster
    course, rogue = certs
    with Client(address, security=tls_security(course), timeout="20s") as client:
        assert len(client.scheduler_info()["workers"]) == 2  # the course's client gets in

    # someone else's certificate, presented to a scheduler it trusts: refused at the handshake
    other = Security(require_encryption=True, tls_ca_file=str(course / "ca.pem"),
                     tls_client_cert=str(rogue / "client.pem"),
                     tls_client_key=str(rogue / "client-key.pem"))
    with pytest.raises(OSError):
        Client(address, security=other, timeout="5s", set_as_default=False)
    wait_for(lambda: "certificate verify failed" in _log(folder, "scheduler.log"), 30,
             "the scheduler to log the refused certificate")
    with pytest.raises(OSError):  # no TLS at all
        Client(address.replace("tls://", "tcp://"), timeout="5s", set_as_default=False)
    with pytest.raises(ClusterError, match="cannot reach the Dask scheduler"):
        grade(ASSIGNMENT, folder / "no-subs", folder / "out", root=ROOT, scheduler=address,
              security=tls_security(rogue), connect_timeout=5, isolate=False)


@pytest.mark.slow
def test_a_worker_without_the_courses_certificate_cannot_join(cluster, certs):
    from distributed import Client

    address, folder = cluster
    course, rogue = certs
    # trusts the course's CA (ca.pem is public), but its own certificate is someone else's
    proc = start(["worker", address, "--name", "rogue", "--nthreads", "1", "--no-nanny",
                  "--no-dashboard", "--death-timeout", "10",
                  *tls_args(rogue, "worker", ca=course / "ca.pem")], folder / "worker-rogue.log")
    try:
        wait_for(lambda: proc.poll() is not None, 90, "the rogue worker to give up")
        assert proc.returncode != 0
    finally:
        stop(proc)
    assert "Timed out starting worker" in _log(folder, "worker-rogue.log")
    assert "certificate verify failed" in _log(folder, "scheduler.log")
    with Client(address, security=tls_security(course), timeout="20s") as client:
        names = {w["name"] for w in client.scheduler_info()["workers"].values()}
    assert names == {"a", "b"}


@pytest.mark.slow
@pytest.mark.sandbox
def test_a_tls_cluster_grades_a_batch_every_row_once(cluster, certs, tmp_path):
    address, _ = cluster
    subs, out = tmp_path / "subs", tmp_path / "out"
    kinds = batch(subs, 3)
    rows = grade(ASSIGNMENT, subs, out, root=ROOT, scheduler=address,
                 security=tls_security(certs[0]), timeout=300)
    assert [r.student_id for r in rows] == sorted(kinds)
    recorded = read_results(out)
    assert sorted(r.student_id for r in recorded) == sorted(kinds)  # every row once
    ex = exercise_for(ASSIGNMENT, ROOT)
    for row in recorded:
        assert row.status == "graded", row
        assert (row.score == ex.max_score) == (kinds[row.student_id] == "solution"), row
    assert not (out / "work" / "s00").exists()  # graded on the workers, not here
