"""Which models can be fine-tuned, and the tuned one registered as a new model version.

A base is fine-tunable when Keel serves it itself from a llama-architecture GGUF (a `local`
provider): the trainer reads that file and the merged result is served the same way. The
new version is a new local provider pointing at the merged GGUF, a version of the base's
name (or `<name>-<suffix>`) on it, and a deployment of one replica; its lineage (base
version, training file, job id, metrics) is kept with the job and in the version's tags.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keel.deploy.bundled import BundledModelMissing
from keel.deploy.manager import resolve_model_path
from keel.errors import InvalidRequest, NotFound
from keel.finetune.store import FineTuneStore
from keel.jobs.model import Job
from keel.registry.service import RegistryService
from keel.registry.specs import DeploymentSpec, ModelVersionSpec, ProviderSpec, parse_version_ref

FINE_TUNABLE_ARCHITECTURES = ("llama",)


def _architecture(path: Path) -> str:
    from gguf import GGUFReader

    return str(GGUFReader(str(path)).fields["general.architecture"].contents())


@dataclass
class Registrar:
    registry: RegistryService
    runs: FineTuneStore

    def resolve_base(self, project_id: str, model: str) -> tuple[dict[str, Any], Path]:
        """(model version, its GGUF) for `model` (`name@version`, or a name: its newest
        version); a 404 or 400 naming the cause when it is unknown or cannot be tuned."""
        versions = self.registry.list_models(project_id)
        try:
            name, number = parse_version_ref(model)
            found = [v for v in versions if v["name"] == name and v["version"] == number]
        except ValueError:
            found = [v for v in versions if v["name"] == model][-1:]
        if not found:
            known = ", ".join(sorted({v["ref"] for v in versions})) or "none"
            raise NotFound(
                f"unknown base model {model!r} (known: {known}); name a model version from "
                "'keel models list'",
                param="model",
                code="model_not_found",
            )
        version = found[0]
        provider = self.registry.get_provider(project_id, version["provider"])
        why = None
        path = Path()
        if provider["kind"] != "local":
            why = (
                f"it is served by provider {provider['name']!r} ({provider['kind']}), "
                "not from a local GGUF Keel can read"
            )
        else:
            try:
                path = resolve_model_path(str(provider["config"].get("model_path", "")))
            except BundledModelMissing as error:
                why = str(error)
            if why is None and not path.is_file():
                why = f"its GGUF file {path} does not exist"
            if why is None and (arch := _architecture(path)) not in FINE_TUNABLE_ARCHITECTURES:
                why = (
                    f"its architecture is {arch!r}; LoRA training here supports "
                    f"{', '.join(FINE_TUNABLE_ARCHITECTURES)}"
                )
        if why is not None:
            raise InvalidRequest(
                f"model {version['ref']} cannot be fine-tuned: {why}; pick a local llama-"
                "architecture model such as the bundled smollm2",
                param="model",
                code="model_not_fine_tunable",
            )
        return version, path

    def base_path(self, project_id: str, model: str) -> Path:
        return self.resolve_base(project_id, model)[1]

    def register(self, job: Job, gguf: Path, metrics: dict[str, Any], scan: dict[str, Any]) -> str:
        """Provider, version and deployment for the merged GGUF; the version's ref. Running
        it again (a job resumed after a crash) finds what the first run made."""
        base, _ = self.resolve_base(job.project_id, job.params["model"])
        actor = f"key:{job.key_id} (fine-tuning job {job.id})"
        provider = f"ft-{job.id.rsplit('_', 1)[-1][:16]}"
        self.registry.put_provider(
            job.project_id,
            ProviderSpec(name=provider, kind="local", config={"model_path": str(gguf)}),
            actor,
        )
        suffix = job.params.get("suffix")
        name = f"{base['name']}-{suffix}" if suffix else base["name"]
        version, _ = self.registry.add_model_version(
            job.project_id,
            ModelVersionSpec(
                name=name,
                provider=provider,
                upstream_model=base["upstream_model"],
                params=base["params"],
                context_window=base["context_window"],
                tags=["fine-tuned", f"base:{base['ref']}", f"job:{job.id}"],
            ),
            actor,
        )
        ref = str(version["ref"])
        self.registry.put_deployment(job.project_id, DeploymentSpec(model=ref, replicas=1), actor)
        lineage = {
            "base_model": base["ref"],
            "training_file": job.params["training_file"],
            "validation_file": job.params.get("validation_file"),
            "job_id": job.id,
            "gguf": str(gguf),
            "metrics": metrics,
            "scan": {k: scan.get(k) for k in ("examples", "pii", "secrets", "injections")},
        }
        self.runs.update(job.id, model_ref=ref, lineage=lineage)
        return ref
