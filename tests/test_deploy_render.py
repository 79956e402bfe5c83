"""The committed deployment is the render of the bundled topology (`meridian deploy compose`, `meridian deploy k8s`),
every config the renderers write loads with the project's own loaders, and the CLI fails clearly on bad input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from control_plane.config import ControlPlaneConfig, load_control_plane_config
from data_plane.config import RouterConfig, load_router_config
from meridian_cli.main import main
from regions.deploy.compose import render_compose
from regions.deploy.files import RenderedFile, stale_files
from regions.deploy.k8s import render_k8s
from regions.deploy.options import RenderOptions
from regions.topology import DEFAULT_TOPOLOGY, Topology, load_topology, parse_topology

ROOT = Path(__file__).resolve().parent.parent
K8S_DIR = ROOT / "deploy" / "k8s"
RERENDER = "meridian deploy compose && meridian deploy k8s"
TWO_REGIONS = ROOT / "regions" / "topology-two-regions.yaml"


def _two_regions_with_a_real_backend() -> Topology:
    """The small topology plus a real backend that takes a key: the renderers' other branches."""
    document = yaml.safe_load(TWO_REGIONS.read_text())
    document["regions"]["eu-west"]["backends"].append({
        "name": "eu-vllm", "model": "test-model", "url": "http://vllm.models.example:8000/v1",
        "served_model": "meta-llama/Llama-3.1-8B-Instruct", "api_key_env": "MERIDIAN_BACKEND_VLLM_KEY"})
    return parse_topology(document, "two-regions-with-vllm")


TOPOLOGIES = {"default": lambda: load_topology(DEFAULT_TOPOLOGY), "two-regions": lambda: load_topology(TWO_REGIONS),
              "real-backend": _two_regions_with_a_real_backend}


# --- the committed files ------------------------------------------------------------------------------------------

def _stale_message(stale: list[PurePosixPath], where: Path) -> str:
    return (f"{', '.join(map(str, stale))} under {where} differ from a fresh render of regions/topology.yaml; "
            f"run `{RERENDER}` at the repository's root and commit the result (edit the topology or regions/deploy/, "
            "never the rendered files)")


def test_committed_compose_stack_is_the_render_of_the_bundled_topology() -> None:
    stale = stale_files(render_compose(load_topology(DEFAULT_TOPOLOGY), RenderOptions()), ROOT)
    assert not stale, _stale_message(stale, ROOT)


def test_committed_k8s_manifests_are_the_render_of_the_bundled_topology() -> None:
    files = render_k8s(load_topology(DEFAULT_TOPOLOGY), RenderOptions())
    stale = stale_files(files, K8S_DIR)
    assert not stale, _stale_message(stale, K8S_DIR)
    extra = sorted(p.name for p in K8S_DIR.iterdir())
    rendered = sorted(str(f.path) for f in files)
    assert extra == rendered, f"deploy/k8s holds files no render writes: {sorted(set(extra) - set(rendered))}"


def test_a_hand_edit_is_caught(tmp_path: Path) -> None:
    files = render_compose(load_topology(DEFAULT_TOPOLOGY), RenderOptions())
    for file in files:
        target = tmp_path.joinpath(*file.path.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(file.text)
    assert stale_files(files, tmp_path) == []
    edited = tmp_path / "deploy" / "prometheus.yml"
    edited.write_text(edited.read_text().replace("scrape_interval: 5s", "scrape_interval: 15s"))
    (tmp_path / "deploy" / "toxiproxy.json").unlink()
    assert stale_files(files, tmp_path) == [PurePosixPath("deploy/toxiproxy.json"),
                                            PurePosixPath("deploy/prometheus.yml")]


def test_render_does_not_depend_on_the_directory_or_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = render_k8s(load_topology(DEFAULT_TOPOLOGY), RenderOptions())
    monkeypatch.chdir(tmp_path)
    assert main(["deploy", "k8s", "--out", "k8s"]) == 0
    assert stale_files(first, tmp_path / "k8s") == []


# --- rendered configs load with the real loaders ------------------------------------------------------------------

def _compose_configs(topology: Topology) -> Iterator[tuple[str, str]]:
    for file in render_compose(topology, RenderOptions()):
        if file.path.parent == PurePosixPath("deploy/routers"):
            yield "router", file.text
        elif file.path == PurePosixPath("deploy/control-plane.yaml"):
            yield "control-plane", file.text


def _k8s_configs(topology: Topology) -> Iterator[tuple[str, str]]:
    for file in render_k8s(topology, RenderOptions()):
        for document in yaml.safe_load_all(file.text):
            if document["kind"] != "ConfigMap":
                continue
            for key, text in document["data"].items():
                if key == "router.yaml":
                    yield "router", text
                elif key == "control-plane.yaml":
                    yield "control-plane", text


def _load(kind: str, text: str, path: Path) -> RouterConfig | ControlPlaneConfig:
    path.write_text(text)
    return load_router_config(path) if kind == "router" else load_control_plane_config(path)


@pytest.mark.parametrize("topology_name", sorted(TOPOLOGIES))
@pytest.mark.parametrize("render", [_compose_configs, _k8s_configs], ids=["compose", "k8s"])
def test_rendered_configs_load_with_the_project_loaders(topology_name: str, render: Any, tmp_path: Path) -> None:
    topology = TOPOLOGIES[topology_name]()
    configs = [_load(kind, text, tmp_path / f"{index}.yaml") for index, (kind, text) in enumerate(render(topology))]
    routers = [c for c in configs if isinstance(c, RouterConfig)]
    replicas = [c for c in configs if isinstance(c, ControlPlaneConfig)]
    assert sorted(r.region for r in routers) == sorted(topology.regions), "one router config per region"
    assert len(replicas) == 1, "one config shared by the control-plane replicas"
    backends = {b.name for _, b in topology.backends()}
    for config in [*routers, *replicas]:
        assert {d.name for m in config.models.values() for d in m.deployments} == backends
    for router in routers:
        assert router.listen.host == "0.0.0.0" and router.control_plane is not None
        assert router.state_dir is not None, "a restarted router serves its last good table"
    if render is _k8s_configs:
        assert len(replicas[0].etcd.endpoints) == 3, "the control plane knows every etcd member"


def test_a_backend_key_is_handed_to_routers_from_the_environment_never_written() -> None:
    topology = _two_regions_with_a_real_backend()
    compose = yaml.safe_load(render_compose(topology, RenderOptions())[0].text)
    for name, service in compose["services"].items():
        if name.startswith("router-"):
            assert service["environment"]["MERIDIAN_BACKEND_VLLM_KEY"].startswith("${MERIDIAN_BACKEND_VLLM_KEY:?")
    routers = [d for f in render_k8s(topology, RenderOptions()) for d in yaml.safe_load_all(f.text)
               if d["kind"] == "Deployment" and d["metadata"]["name"].startswith("router-")]
    assert len(routers) == 2
    for deployment in routers:
        env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["MERIDIAN_BACKEND_VLLM_KEY"]["valueFrom"]["secretKeyRef"] == {
            "name": "meridian-backend-keys", "key": "MERIDIAN_BACKEND_VLLM_KEY"}


# --- the CLI ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["compose", "k8s"])
def test_cli_refuses_a_missing_topology(target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deploy", target, "--topology", str(tmp_path / "nope.yaml"), "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert f"meridian deploy {target}:" in error and "nope.yaml" in error and "cannot read" in error


def test_cli_refuses_an_unwritable_out_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("a file, not a directory")
    assert main(["deploy", "k8s", "--out", str(blocker)]) == 2
    error = capsys.readouterr().err
    assert "cannot write" in error and str(blocker) in error


def test_cli_names_every_file_it_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deploy", "compose", "--topology", str(TWO_REGIONS), "--out", str(tmp_path)]) == 0
    written = capsys.readouterr().out.split()
    expected = [str(tmp_path.joinpath(*f.path.parts))
                for f in render_compose(load_topology(TWO_REGIONS), RenderOptions(source=str(TWO_REGIONS)))]
    assert written == expected
    assert (tmp_path / "deploy" / "toxiproxy-latency.sh").stat().st_mode & 0o111, "the script stays executable"
    assert str(TWO_REGIONS) in (tmp_path / "docker-compose.yml").read_text().splitlines()[0]


def _files_by_path(files: list[RenderedFile]) -> dict[str, str]:
    return {str(f.path): f.text for f in files}


def test_image_option_reaches_every_meridian_container() -> None:
    files = _files_by_path(render_k8s(load_topology(TWO_REGIONS), RenderOptions(image="registry.example/meridian:1")))
    images = {c["image"] for text in files.values() for d in yaml.safe_load_all(text)
              if d["kind"] in ("Deployment", "StatefulSet") for c in d["spec"]["template"]["spec"]["containers"]}
    assert "registry.example/meridian:1" in images and "meridian:local" not in images
