"""Who may take part in grading on a Dask cluster: the course's own certificate authority.

``course cluster-certs DIR`` makes a certificate authority (CA) for the course and, signed by
it, a certificate and key for each role of a Dask cluster: the scheduler, the workers and the
grading client (``course grade``). Every connection of the cluster is then TLS with
certificates on both ends (Dask's own ``distributed.security.Security``,
``require_encryption=True``): a process that holds no certificate of the course's CA can neither
submit work to the scheduler (the workers run it as root) nor join as a worker (and receive the
students' notebooks and hand back their rows).

Dask checks the CA, not the role: any of the three keys lets its holder connect in any role.
Keep each key on the machines of its role (the client key on the grading machine, the worker
key on the workers), readable only by the account that runs them. ``ca-key.pem`` signs new
certificates; it is needed on no machine of the cluster.

Without ``--tls DIR``, ``course grade`` reads the certificates from
``$COURSE_GRADING_HOME/<course id>/cluster-tls/``, next to the grading secret
(``default_folder()``). The full recipe: autograder/CLUSTER.md.
"""

from __future__ import annotations

import datetime
import os
import sys
from pathlib import Path

from autograder.cluster import ClusterError

__all__ = ["ROLES", "add_certs_command", "add_tls_options", "default_folder", "grade_security",
           "make_certs", "scheduler_security", "tls_security"]

ROLES = ("scheduler", "worker", "client")
CA_DAYS = 3650  # the CA outlives a few terms; the role certificates are renewed each term
CERT_DAYS = 400


def default_folder() -> Path:
    """Where ``course grade`` looks for the certificates: beside the course's grading secret,
    outside the repository and the Python environment."""
    from autograder.protocol import secret_path

    return secret_path().parent / "cluster-tls"


def _files(folder: Path, role: str) -> tuple[Path, Path]:
    """The certificate and the key of ``role`` ("ca" or one of ROLES) in ``folder``."""
    return folder / f"{role}.pem", folder / f"{role}-key.pem"


# --------------------------------------------------------------------------- making them


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write ``path`` whole, with ``mode`` from the start (a key is never readable by others,
    not even while it is written)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _private_key_pem(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _certificate(subject: str, key, issuer, issuer_key, days: int, *, ca: bool):
    """An X.509 certificate for ``key``, signed by ``issuer_key`` (the CA: itself)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dl-tuning course"),
                      x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name)
               .issuer_name(name if issuer is None else issuer.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   issuer_key.public_key()), False))
    usage = dict.fromkeys(("content_commitment", "key_encipherment", "data_encipherment",
                           "key_agreement", "encipher_only", "decipher_only"), False)
    builder = builder.add_extension(x509.KeyUsage(digital_signature=not ca, key_cert_sign=ca,
                                                  crl_sign=ca, **usage), True)
    if not ca:  # every role both listens and connects (the scheduler connects to workers)
        builder = builder.add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_certs(folder: Path, *, days: int = CERT_DAYS, force: bool = False) -> list[Path]:
    """Make the course's CA and a certificate for each of ROLES in ``folder``; return the
    files written. Keys are 0600 and the folder 0700. Raises FileExistsError rather than
    replace a CA (its certificates would stop working) unless ``force``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    folder = Path(folder)
    targets = [path for role in ("ca", *ROLES) for path in _files(folder, role)]
    existing = [p for p in targets if p.exists()]
    if existing and not force:
        raise FileExistsError(f"{existing[0]} exists: the certificates it belongs to would stop "
                              "working. Choose another folder, or pass --force to replace them "
                              "all (then copy the new ones to every machine)")
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("dl-tuning course CA", ca_key, None, ca_key, CA_DAYS, ca=True)
    pem = serialization.Encoding.PEM
    _write(_files(folder, "ca")[1], _private_key_pem(ca_key), 0o600)
    _write(_files(folder, "ca")[0], ca.public_bytes(pem), 0o644)
    for role in ROLES:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(f"dask-{role}", key, ca, ca_key, days, ca=False)
        _write(_files(folder, role)[1], _private_key_pem(key), 0o600)
        _write(_files(folder, role)[0], cert.public_bytes(pem), 0o644)
    return targets


# --------------------------------------------------------------------------- using them


def tls_security(folder: Path | None = None, role: str = "client"):
    """Dask's ``Security`` for ``role`` with the course's certificates in ``folder`` (default:
    ``default_folder()``): TLS required, the peer's certificate checked against the course's
    CA. ClusterError when a file is missing or the key is readable by others."""
    from distributed.security import Security

    folder = Path(folder) if folder else default_folder()
    ca = _files(folder, "ca")[0]
    cert, key = _files(folder, role)
    missing = [str(p) for p in (ca, cert, key) if not p.is_file()]
    if missing:
        raise ClusterError(f"no TLS certificates for the Dask cluster: {', '.join(missing)} "
                           f"missing. Make them with `course cluster-certs {folder}` "
                           "(autograder/CLUSTER.md), or name their folder with --tls DIR")
    if key.stat().st_mode & 0o077:
        raise ClusterError(f"{key} is readable by other users, who could then connect to the "
                           f"cluster as this machine: chmod 600 {key}")
    from autograder.isolation.sandbox import visible_in_sandbox

    if visible_in_sandbox(key):
        raise ClusterError(f"{key} would be readable by student code (the sandbox mounts that "
                           "folder): keep the certificates outside the repository and the "
                           "Python environment")
    return Security(require_encryption=True, tls_ca_file=str(ca),
                    **{f"tls_{role}_cert": str(cert), f"tls_{role}_key": str(key)})


def scheduler_security(address: str, folder: Path | None = None, *, insecure: bool = False):
    """The ``Security`` to reach the scheduler at ``address`` with: the course's certificates
    for ``tls://``. Any other address is refused (ClusterError, saying why) unless ``insecure``,
    which connects without TLS."""
    from distributed.security import Security

    if address.startswith("tls://"):
        return tls_security(folder)
    if insecure:
        return Security(require_encryption=False)
    raise ClusterError(
        f"refusing the unencrypted Dask scheduler {address}: anyone who can reach it could run "
        "code on the grading machines (as root) or join as a worker and receive the students' "
        "notebooks. Start the cluster with the course's certificates (`course cluster-certs`, "
        "then `dask scheduler --tls-ca-file ...`, see autograder/CLUSTER.md) and pass "
        "--scheduler tls://HOST:8786, or pass --insecure-scheduler on a network only you "
        "can reach")


# --------------------------------------------------------------------------- the command line


def cmd_cluster_certs(args) -> int:
    folder = (args.folder or default_folder()).expanduser().absolute()
    try:
        make_certs(folder, days=args.days, force=args.force)
    except (FileExistsError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    ca, (sched, sched_key), (worker, worker_key) = (_files(folder, "ca")[0],
                                                    _files(folder, "scheduler"),
                                                    _files(folder, "worker"))
    print(f"certificates in {folder} (keys readable only by you; ca-key.pem signs them: keep it "
          "off the cluster)\n"
          f"scheduler machine: {ca}, {sched}, {sched_key}\n"
          f"  dask scheduler --protocol tls --tls-ca-file {ca} --tls-cert {sched} "
          f"--tls-key {sched_key}\n"
          f"each worker machine: {ca}, {worker}, {worker_key}\n"
          f"  dask worker tls://HOST:8786 --tls-ca-file {ca} --tls-cert {worker} "
          f"--tls-key {worker_key}\n"
          f"grading machine: course grade ... --scheduler tls://HOST:8786"
          + ("" if folder == default_folder() else f" --tls {folder}"))
    return 0


def add_certs_command(sub) -> None:
    """Register ``course cluster-certs [DIR]`` with the ``course`` command's subparsers."""
    certs = sub.add_parser("cluster-certs", help="make the TLS certificates of a Dask grading "
                           "cluster", description="Make the course's certificate authority and "
                           "a certificate for the Dask scheduler, the workers and `course grade` "
                           "(autograder/CLUSTER.md).")
    certs.add_argument("folder", type=Path, nargs="?", default=None,
                       help="where to write them (default: cluster-tls/ beside the grading "
                       "secret, ~/.local/share/course-grading/<course id>/cluster-tls)")
    certs.add_argument("--days", type=int, default=CERT_DAYS,
                       help=f"validity of the role certificates (default {CERT_DAYS})")
    certs.add_argument("--force", action="store_true",
                       help="replace existing certificates (every machine then needs the new ones)")
    certs.set_defaults(func=cmd_cluster_certs)


def grade_security(args):
    """The ``Security`` of ``course grade``'s --scheduler, --tls and --insecure-scheduler
    (None without --scheduler); ClusterError as ``scheduler_security``."""
    if not args.scheduler:
        return None
    if args.insecure_scheduler and not args.scheduler.startswith("tls://"):
        print(f"WARNING: --insecure-scheduler: {args.scheduler} has no TLS; anyone who can "
              "reach it can run code on the workers and read the submissions.", file=sys.stderr)
    return scheduler_security(args.scheduler, args.tls, insecure=args.insecure_scheduler)


def add_tls_options(grade_parser) -> None:
    """``course grade``'s --tls and --insecure-scheduler (with --scheduler)."""
    grade_parser.add_argument("--tls", type=Path, default=None, metavar="DIR",
                              help="the course's cluster certificates (`course cluster-certs`) "
                              "for a tls:// --scheduler (default: cluster-tls/ beside the "
                              "grading secret)")
    grade_parser.add_argument("--insecure-scheduler", action="store_true",
                              help="allow a --scheduler without TLS (tcp://): anyone who can "
                              "reach it can run code on the workers and see submissions")
