"""deploy/ (Docker, Compose, systemd, Redis) agrees with psd: real subcommands, real settings,
matching ports; checked by the tools found here. No container or unit is started."""

from __future__ import annotations

import configparser
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import fields
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import redis
import yaml

from psd.cli.main import main
from psd.cli.serve import STOP_GRACE
from psd.config import Settings, load_settings
from psd.connect import cluster_nodes
from psd.embedded import EmbeddedServer
from psd.embedded_cluster import distinct_free_ports

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
SETTINGS = {f"PSD_{f.name.upper()}" for f in fields(Settings)} | {"PSD_CONFIG"}
PORT = Settings().bind.rpartition(":")[2]
PROCESSES = {"web", "worker", "beat", "flower", "nsq-bridge"}
VENV_PSD = "/opt/psd/.venv/bin/psd"
UNIT_MUST = dict(
    EnvironmentFile="/etc/psd/psd.env",
    Restart="on-failure",
    KillMode="mixed",
    KillSignal="SIGTERM",
    NoNewPrivileges="yes",
    ProtectSystem="strict",
    ProtectHome="yes",
    PrivateTmp="yes",
    PrivateDevices="yes",
)


def need(tool: str, *probe: str) -> str:
    """``tool``'s path; skip without it (or when ``tool *probe`` fails), unless
    PSD_REQUIRE_<TOOL>=1 (CI) makes that a failure."""
    found = shutil.which(tool) or shutil.which(tool, path=str(Path(sys.executable).parent))
    if found and (
        not probe or subprocess.run([found, *probe], capture_output=True).returncode == 0
    ):
        return found
    flag = "PSD_REQUIRE_" + re.sub(r"\W", "_", tool).upper()
    stop = pytest.fail if os.environ.get(flag) == "1" else pytest.skip
    raise stop.Exception(f"{' '.join((tool, *probe))} not available (required if {flag}=1)")


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def exec_start(path: Path) -> list[str]:
    return shlex.split(unit(path)["Service"]["ExecStart"])


def lines_of(path: Path, pattern: str) -> dict[str, str]:
    found = (re.fullmatch(pattern, line) for line in path.read_text().splitlines())
    return {m[1]: m[2] for m in found if m}


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    lines = re.sub(r"\\\n", " ", dockerfile).splitlines()
    split = (line.strip().partition(" ") for line in lines)
    return [(word.upper(), rest.strip()) for word, _, rest in split if word and word[0] != "#"]


COMPOSE = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
SERVICES = {name: s for name, s in COMPOSE["services"].items() if name != "redis"}
ENV_FILE = lines_of(DEPLOY / "systemd" / "psd.env", r"#? ?([A-Z_]+)=(.*)")  # examples too
REDIS_CONF = lines_of(DEPLOY / "redis.conf", r"([a-z-]+) +(.+)")
STEPS = instructions((DEPLOY / "Dockerfile").read_text())


def test_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads((ROOT / "tests" / "data" / "compose-spec.json").read_text())
    validator = jsonschema.Draft7Validator(schema)  # the draft its $schema names
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(COMPOSE)]
    assert errors == []


def test_hadolint_accepts_the_dockerfile() -> None:
    """(``docker compose config`` would check the compose file too where the compose plugin
    is installed; the schema check above stands in for it.)"""
    done = subprocess.run(
        [need("hadolint"), str(DEPLOY / "Dockerfile")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_services_run_the_image_on_a_healthy_redis() -> None:
    redis_service, conf = COMPOSE["services"]["redis"], "/usr/local/etc/redis/redis.conf"
    assert redis_service["image"] == "redis:7" and redis_service["healthcheck"]["test"]
    assert redis_service["command"][:2] == ["redis-server", conf]
    assert {f"./redis.conf:{conf}:ro", "redis-data:/data"} <= set(redis_service["volumes"])
    assert "redis-data" in COMPOSE["volumes"]
    for name, service in SERVICES.items():
        build = service["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy", name
        assert service["restart"] in ("always", "unless-stopped", "on-failure"), name
        assert int(service["stop_grace_period"].rstrip("s")) > STOP_GRACE, name
        assert service["environment"]["PSD_REDIS_URL"] == "redis://redis:6379/0", name
    assert SERVICES["nsqbridge"]["profiles"] == ["nsq"]


def test_every_process_is_a_real_psd_subcommand_in_every_file() -> None:
    lines = lines_of(ROOT / "Procfile", r"(\w+): (?:exec )?(.*)")
    procfile = [shlex.split(command) for command in lines.values()]
    assert lines.keys() == SERVICES.keys()  # one compose service per process, same names
    assert {argv[0] for argv in procfile} == {"psd"}
    assert {exec_start(path)[0] for path in UNITS} == {VENV_PSD}
    assert set(main.commands) >= PROCESSES
    assert {argv[1] for argv in procfile} == PROCESSES
    assert {service["command"][0] for service in SERVICES.values()} == PROCESSES
    assert {exec_start(path)[1] for path in UNITS} == PROCESSES


def test_every_psd_variable_is_a_setting_and_loads() -> None:
    docker_env = [shlex.split(args) for word, args in STEPS if word == "ENV"]
    sources = {
        "psd.env": ENV_FILE,
        "Dockerfile": dict(pair.split("=", 1) for args in docker_env for pair in args),
        **{name: service.get("environment", {}) for name, service in SERVICES.items()},
    }
    for path in UNITS:
        env = unit(path)["Service"]["Environment"].split()
        sources[path.name] = dict(pair.split("=", 1) for pair in env)
    for where, env in sources.items():
        psd_vars = {k: v for k, v in env.items() if k.startswith("PSD_")}
        assert set(psd_vars) <= SETTINGS, f"{where}: unknown {set(psd_vars) - SETTINGS}"
        load_settings(environ=psd_vars)  # a wrong value raises


def test_ports_agree_with_the_settings() -> None:
    web, flower = SERVICES["web"], SERVICES["flower"]
    assert web["environment"]["PSD_BIND"].rpartition(":")[2] == PORT
    assert [p.rpartition(":")[2] for p in web["ports"]] == [PORT]
    assert ENV_FILE["PSD_BIND"].rpartition(":")[2] == PORT
    flower_port = [a.partition("=")[2] for a in flower["command"] if a.startswith("--port=")]
    assert [p.rpartition(":")[2] for p in flower["ports"]] == flower_port
    assert f"--port={flower_port[0]}" in exec_start(DEPLOY / "systemd" / "psd-flower.service")
    exposed = {p for word, args in STEPS if word == "EXPOSE" for p in args.split()}
    assert {PORT, *flower_port} <= exposed


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_systemd_unit_is_complete_and_hardened(path: Path) -> None:
    parsed = unit(path)
    service = parsed["Service"]
    assert {key: service.get(key) for key in UNIT_MUST} == UNIT_MUST
    assert service["User"] not in ("", "root", "0")
    assert int(service["TimeoutStopSec"].rstrip("s")) > STOP_GRACE
    assert (parsed["Unit"]["PartOf"], parsed["Install"]["WantedBy"]) == ("psd.target",) * 2


def test_systemd_analyze_verifies_the_units_and_target(tmp_path: Path) -> None:
    assert unit(DEPLOY / "systemd" / "psd.target")["Install"]["WantedBy"] == "multi-user.target"
    analyze = need("systemd-analyze")
    # verify wants ExecStart to exist: point it at this environment's psd
    psd = Path(sys.executable).parent / "psd"
    for path in [*UNITS, DEPLOY / "systemd" / "psd.target"]:
        (tmp_path / path.name).write_text(path.read_text().replace(VENV_PSD, str(psd)))
    units = sorted(str(p) for p in tmp_path.iterdir())
    done = subprocess.run([analyze, "verify", *units], capture_output=True, text=True)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_dockerfile_builds_a_non_root_psd_image() -> None:
    assert all(args.startswith("python:3.11-slim") for word, args in STEPS if word == "FROM")
    final = STEPS[max(i for i, (word, _) in enumerate(STEPS) if word == "FROM") :]
    users = [args.partition(":")[0] for word, args in final if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert "/health/ping" in " ".join(args for word, args in final if word == "HEALTHCHECK")
    assert [json.loads(a) for w, a in final if w == "ENTRYPOINT"] == [["psd"]]
    assert [json.loads(a) for w, a in final if w == "CMD"] == [["web"]]
    copies = [args.split() for word, args in STEPS if word == "COPY" and "--from" not in args]
    placed = {src: dst.rstrip("/") for *sources, dst in copies for src in sources}
    assert all(placed.get(n) in (".", n, f"./{n}") for n in needed_for_pip_install()), placed
    text = (DEPLOY / "Dockerfile").read_text()
    assert not re.search(r"(PASSWORD|SECRET|TOKEN)\w*=|://[^/\s:]*:[^@/\s]+@", text)


def needed_for_pip_install() -> set[str]:
    """The files and top-level directories ``pip install .`` reads, from pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dirs = project["tool"]["setuptools"]["packages"]["find"]["where"]
    return {"pyproject.toml", project["project"]["readme"], *dirs}


def test_dockerignore_sends_what_pip_needs_and_no_secrets() -> None:
    names = (ROOT / ".dockerignore", DEPLOY / "Dockerfile.dockerignore", DEPLOY / "dockerignore")
    text = next(p for p in names if p.exists()).read_text()
    patterns = [p.strip() for p in text.splitlines() if p.strip() and not p.startswith("#")]

    def sent(path: str) -> bool:
        prefixes = [path.rsplit("/", n)[0] for n in range(path.count("/") + 1)]
        keep = True
        for pattern in patterns:
            if any(fnmatch.fnmatch(p, pattern.lstrip("!")) for p in prefixes):
                keep = pattern.startswith("!")
        return keep

    assert all(sent(path) for path in needed_for_pip_install())
    assert not any(sent(p) for p in (".git", ".venv", "deploy/systemd/psd.env", "tests"))


def test_redis_conf_sets_what_psd_needs_as_the_embedded_server_does() -> None:
    conf = REDIS_CONF
    args = EmbeddedServer(binary=Path("valkey-server"), port=1).command()
    persisted = EmbeddedServer(data_dir="unused", binary=Path("valkey-server"), port=1).command()
    for key in ("hash-max-listpack-entries", "maxmemory-policy"):
        assert conf[key] == args[args.index(f"--{key}") + 1], key
    assert conf["appendfsync"] == persisted[persisted.index("--appendfsync") + 1]
    assert conf["maxmemory-policy"] == "noeviction" and conf["save"] == '""'
    assert (conf["appendonly"], conf["appendfsync"]) == ("yes", "always")
    assert conf["protected-mode"] == "yes" and "requirepass" not in conf


class ServerOnConf(EmbeddedServer):
    def command(self) -> list[str]:
        conf, port = str(DEPLOY / "redis.conf"), str(self.port)
        return [str(self.binary), conf, "--port", port, "--dir", str(self.data_dir)]


def test_redis_server_runs_with_the_conf(tmp_path: Path) -> None:
    with ServerOnConf(tmp_path, binary=Path(need("redis-server"))) as server:
        client = redis.Redis(port=server.port, decode_responses=True)
        got = {k: client.config_get(k)[k] for k in REDIS_CONF if k not in ("bind", "port")}
        client.close()
    assert got == {k: v.strip('"') for k, v in REDIS_CONF.items() if k in got}


# -- the Redis Cluster deployment (docker-compose.cluster.yml) --

CLUSTER_COMPOSE = yaml.safe_load((DEPLOY / "docker-compose.cluster.yml").read_text())
CLUSTER_SERVICES = CLUSTER_COMPOSE["services"]
NODES = {name: s for name, s in CLUSTER_SERVICES.items() if re.fullmatch(r"redis-\d+", name)}
PSD_SERVICES = {name: s for name, s in CLUSTER_SERVICES.items() if "build" in s}
CREATE = CLUSTER_SERVICES["redis-cluster-create"]


def interpolated(value: str) -> str:
    """A compose value as the container gets it, with every ``${VAR...}`` given "x"."""
    return re.sub(r"\$\{[^}]*\}", "x", value).replace("$$", "$")


def test_cluster_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads((ROOT / "tests" / "data" / "compose-spec.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = [
        f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(CLUSTER_COMPOSE)
    ]
    assert errors == []


def test_cluster_nodes_are_redis_7_with_the_conf_in_cluster_mode_each_on_its_own_volume() -> None:
    assert len(NODES) == 6
    conf = "/usr/local/etc/redis/redis.conf"
    addresses = set()
    for name, node in NODES.items():
        assert node["image"] == "redis:7" and node["healthcheck"]["test"], name
        command = node["command"]
        assert command[:2] == ["redis-server", conf], name
        assert command[command.index("--cluster-enabled") + 1] == "yes", name
        assert {f"./redis.conf:{conf}:ro", f"{name}-data:/data"} == set(node["volumes"])
        assert f"{name}-data" in CLUSTER_COMPOSE["volumes"]
        addresses.add(node["networks"]["default"]["ipv4_address"])
    subnet = CLUSTER_COMPOSE["networks"]["default"]["ipam"]["config"][0]["subnet"]
    assert all(a.rpartition(".")[0] == subnet.rpartition(".")[0] for a in addresses)
    assert len(addresses) == len(NODES)
    # psd must wait for the cluster's creation: every slot served before it starts
    assert {n: d["condition"] for n, d in CREATE["depends_on"].items()} == dict.fromkeys(
        NODES, "service_healthy"
    )
    script = CREATE["command"][-1]
    created = re.search(r"--cluster create (\S+) --cluster-replicas 1 --cluster-yes", script)
    assert created and created[1] == "$$nodes"
    listed = re.search(r'nodes="([^"]+)"', script)
    assert listed and set(listed[1].split()) == {f"{a}:6379" for a in addresses}
    assert "cluster_state:ok" in script


def test_cluster_create_script_is_valid_shell() -> None:
    assert CREATE["command"][:2] == ["sh", "-ec"] and CREATE["restart"] == "no"
    script = interpolated(CREATE["command"][-1])
    done = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_psd_on_the_cluster_runs_real_commands_with_a_broker_of_its_own() -> None:
    assert set(PSD_SERVICES) == {"web", "worker", "beat"}
    assert {service["command"][0] for service in PSD_SERVICES.values()} <= set(main.commands)
    node_names = [(name, 6379) for name in NODES]
    rabbitmq_user = CLUSTER_SERVICES["rabbitmq"]["environment"]["RABBITMQ_DEFAULT_USER"]
    for name, service in PSD_SERVICES.items():
        build = service["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
        conditions = {n: d["condition"] for n, d in service["depends_on"].items()}
        assert conditions == {
            "redis-cluster-create": "service_completed_successfully",
            "rabbitmq": "service_healthy",
        }, name
        assert int(service["stop_grace_period"].rstrip("s")) > STOP_GRACE, name
        env = {k: interpolated(v) for k, v in service["environment"].items()}
        assert cluster_nodes(env["PSD_REDIS_URL"])[0] == node_names, name
        broker = urlsplit(env["PSD_BROKER_URL"])
        assert (broker.scheme, broker.hostname, broker.port) == ("amqp", "rabbitmq", 5672)
        assert broker.username == rabbitmq_user
        assert set(env) <= SETTINGS, f"{name}: unknown {set(env) - SETTINGS}"
        loaded = load_settings(environ=env)  # a wrong value raises
        assert loaded.write_replicas != 0, "writes wait for a replica on a cluster with them"
    assert PSD_SERVICES["web"]["environment"]["PSD_BIND"].rpartition(":")[2] == PORT
    text = (DEPLOY / "docker-compose.cluster.yml").read_text()
    assert not re.search(r"(PASSWORD|PASS)\w*: +[^$\s]|://[^/\s:]*:[^@/\s$]+@", text)


def test_redis_server_runs_a_cluster_node_with_the_conf(tmp_path: Path) -> None:
    """A node's command line, as compose gives it, under a real redis-server (here on
    loopback, on free ports): it starts in cluster mode with the conf's settings."""
    command = NODES["redis-1"]["command"]
    args = command[2:]
    args[args.index("0.0.0.0")] = "127.0.0.1"
    port, bus_port = distinct_free_ports(2)
    extra = ["--port", str(port), "--cluster-port", str(bus_port), "--dir", str(tmp_path)]

    class Node(EmbeddedServer):
        def command(self) -> list[str]:
            return [str(self.binary), str(DEPLOY / "redis.conf"), *args, *extra]

    with Node(tmp_path, port=port, binary=Path(need("redis-server"))) as server:
        client = redis.Redis(port=server.port, decode_responses=True)
        names = ("cluster-enabled", "cluster-node-timeout", *REDIS_CONF)
        got = {k: client.config_get(k)[k] for k in names}
        known = client.cluster("INFO")["cluster_known_nodes"]
        client.close()
    assert (got["cluster-enabled"], int(known)) == ("yes", 1)
    assert got["cluster-node-timeout"] == args[args.index("--cluster-node-timeout") + 1]
    # the conf's settings hold, but for those compose overrides for its private network
    overridden = {"bind", "port", "protected-mode"}
    expected = {k: v.strip('"') for k, v in REDIS_CONF.items() if k not in overridden}
    assert {k: got[k] for k in expected} == expected
    assert (tmp_path / "nodes.conf").exists()
