"""``model export``: a job, in the version's own training image (so the framework that saved the model
loads it), that runs ``python -m deepdock.sdk.export`` on the version's files and checks parity.

The job's code package is the training job's code (the model's classes import from it) plus the
version's files under ``.deepdock/export/``. When the job is collected, its report and exported file
join the version's ``formats``; a parity failure fails the job, and the report says which inputs
differed and by how much.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from deepdock.api import ExportOut
from deepdock.artifacts import ArtifactStore
from deepdock.errors import NotFoundError, SpecError
from deepdock.server.db.models import ModelExport, ModelVersion, User
from deepdock.server.db.session import Database
from deepdock.server.services.artifacts import StoredFile
from deepdock.server.services.auth import project_for_submit
from deepdock.server.services.code import read_code, store_code
from deepdock.server.services.registry import EXAMPLE_FILE, get_version
from deepdock.specs.job import JobSpec

EXPORT_DIR = ".deepdock/export"
REPORT_PATH = "export/export_report.json"
EXPORT_CPUS = 1.0
EXPORT_MEMORY = "2g"
EXPORT_MAX_RUNTIME_S = 15 * 60


@dataclass(frozen=True)
class ExportResult:
    job_id: str
    ok: bool
    report: dict[str, Any]
    file: StoredFile | None


def start_export(db: Database, store: ArtifactStore, home: Path, max_code_bytes: int, user: User, ref: str,
                 fmt: str, generated: int, project: str | None = None) -> ExportOut:
    from deepdock.server.services.jobs import submit_job

    with db.session() as session:
        model, version = get_version(session, user, ref, project)
        project_for_submit(session, user, model.project.name)
        image = version.lineage.get("image")
        if not image:
            raise SpecError(f"{model.name}:{version.version} records no training image to export in")
        names = [f["path"] for f in version.files]
        model_name, number, prefix, model_file = model.name, version.version, version.prefix, version.model_file
        code_sha, project_name, version_id = version.lineage.get("code_sha256"), model.project.name, version.id
    files = {f"{EXPORT_DIR}/{name}": store.get_bytes(f"{prefix}/{name}") for name in names}
    code = read_code(home, code_sha) if code_sha else None
    package = _package(code, files)
    command = ["python", "-m", "deepdock.sdk.export", "--model", f"{EXPORT_DIR}/{model_file}", "--format", fmt,
               "--out", "artifacts/export", "--generated", str(generated)]
    if EXAMPLE_FILE in names:
        command += ["--example", f"{EXPORT_DIR}/{EXAMPLE_FILE}"]
    spec = JobSpec.model_validate({
        "name": f"export-{model_name}-{number}-{fmt}"[:64].rstrip("-."), "image": image, "command": command,
        "project": project_name, "resources": {"cpus": EXPORT_CPUS, "memory": EXPORT_MEMORY},
        "max_runtime": EXPORT_MAX_RUNTIME_S, "env": {"DEEPDOCK_EXPORT_OF": f"{model_name}:{number}"},
    })
    with db.session() as session:
        code_out = store_code(session, home, package, max_code_bytes)
        job = submit_job(session, user, spec, code_sha256=code_out.sha256, server_home=home, commit=False)
        session.add(ModelExport(job_id=job.id, version_id=version_id, format=fmt))
    return ExportOut(model=model_name, version=number, format=fmt, job=job.id)


def _package(code: bytes | None, files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:  # type: ignore[call-overload]
        if code:
            with tarfile.open(fileobj=io.BytesIO(code), mode="r:*") as src:
                for member in src.getmembers():
                    if not member.name.lstrip("./").startswith(EXPORT_DIR):
                        tar.addfile(member, src.extractfile(member) if member.isfile() else None)
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def collect_export(db: Database, store: ArtifactStore, job_id: str, produced: dict[str, StoredFile]) -> ExportResult | None:
    """I/O half, before the attempt's closing transaction: read the report, copy the exported file."""
    report_file = produced.get(REPORT_PATH)
    with db.session() as session:
        request = session.get(ModelExport, job_id)
        version = session.get(ModelVersion, request.version_id) if request else None
        prefix = version.prefix if version else None
    if prefix is None:
        return None
    if report_file is None:
        return ExportResult(job_id, False, {"error": "the export job wrote no report"}, None)
    try:
        report = json.loads(store.get_bytes(report_file.key))
    except (NotFoundError, ValueError):
        return ExportResult(job_id, False, {"error": "the export report is missing or not JSON"}, None)
    exported = produced.get(f"export/{report.get('file', '')}")
    if not report.get("ok") or exported is None:
        return ExportResult(job_id, False, report, None)
    target = f"{prefix}/{report['file']}"
    store.copy(exported.key, target)
    return ExportResult(job_id, True, report, StoredFile(target, exported.size, exported.sha256))


def finish_export(session: Session, result: ExportResult | None) -> None:
    """In the closing transaction: record the format on the version (or why the export failed)."""
    if result is None:
        return
    request = session.get(ModelExport, result.job_id)
    version = session.get(ModelVersion, request.version_id) if request else None
    if request is None or version is None:
        return
    request.status = "ok" if result.ok else "failed"
    request.error = "" if result.ok else str(result.report.get("error") or "parity check failed")
    if result.ok and result.file is not None:
        name = result.file.key.rsplit("/", 1)[-1]
        formats = dict(version.formats)
        formats[request.format] = {"file": name, "size": result.file.size, "sha256": result.file.sha256,
                                   "job": result.job_id, "report": result.report}
        version.formats = formats
        files = [f for f in version.files if f["path"] != name]
        version.files = [*files, {"path": name, "size": result.file.size, "sha256": result.file.sha256}]
        if not version.signature and isinstance(result.report.get("signature"), dict):
            version.signature = result.report["signature"]
