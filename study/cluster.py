"""Offline checks of a Ray cluster-launcher config (``cluster.yaml``): no cloud, no credentials.

``ray up`` has no dry run: on AWS it creates IAM roles, key pairs and security groups at once.
:func:`validate_cluster_config` checks a config before that, in three layers:

1. ``yaml.safe_load``.
2. Ray's own validation: ``prepare_config`` (merges the provider's ``defaults.yaml``, the
   setup-command lists and per-type worker limits, exactly as ``ray up`` does) then
   ``validate_config`` (the ``ray-schema.json`` jsonschema plus cross-field checks). These are
   **private** Ray APIs (``ray.autoscaler._private.util``), used only in this module and written
   against Ray :data:`RAY_API_VERSION`; a different Ray triggers a warning. If botocore is
   importable, every AWS ``node_config`` is also checked against EC2 ``RunInstances``' input
   shape (botocore's ``ParamValidator``, which needs no credentials); without botocore (it is
   not a dependency of this project) that part is skipped silently. Problems at this layer make
   ``ray up`` fail, so they raise :class:`ClusterConfigError` (a ``ValueError``) naming the file.
3. This project's rules (``RULES``), checked on the *prepared* config, so that Ray's defaults
   count too (an omitted ``head_start_ray_commands`` means AWS's ``--dashboard-host=0.0.0.0``).
   They return a list of violations; empty means OK.

Command line: ``python -m study.cluster cluster.yaml [more.yaml ...]`` prints ``OK`` or the
violations; exit status 0 (OK), 1 (rule violations) or 2 (Ray or EC2 rejects the file).
"""

from __future__ import annotations

import argparse
import copy
import functools
import importlib.metadata
import ipaddress
import logging
import re
import shlex
import sys
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# Ray version whose private autoscaler API (prepare_config / validate_config) this module was
# written and tested against. Bump it together with the ray pin in pyproject.toml.
RAY_API_VERSION = "2.60.0"

# Ports that must never be reachable from the whole internet: anyone who reaches the
# dashboard / Jobs API, the Ray Client server or the GCS can run code on the cluster.
SENSITIVE_PORTS: dict[int, str] = {
    22: "SSH",
    6379: "GCS",
    8265: "dashboard / Jobs API",
    10001: "Ray Client",
}
_WORLD = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
_AMI_ID = re.compile(r"^ami-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
_PACKAGE = "imbalance-study"
_PACKAGE_PIN = re.compile(
    r"imbalance[-_]study(?:==|-)(?P<version>\d+(?:\.\d+)*(?:(?:a|b|rc|\.post|\.dev)\d+)?)"
)
_RAY_REQUIREMENT = re.compile(
    r"^ray(?:\[[^\]]*\])?(?P<spec>\s*(?:==|>=|<=|~=|!=|===|<|>|@).*)?$", re.DOTALL
)


class ClusterConfigError(ValueError):
    """Ray's (or EC2's) own validation rejects a cluster config; the message names the file."""


# --------------------------------------------------------------------------------------------
# Layers 1 and 2: YAML, Ray's schema, EC2 parameter shapes.


def validate_cluster_config(path: str | Path) -> list[str]:
    """Validate the cluster-launcher YAML at ``path`` without contacting any cloud.

    Returns this project's rule violations, one readable sentence each, in ``RULES`` order;
    an empty list means the config is OK. Raises :class:`ClusterConfigError` (a
    ``ValueError``) naming the file when the YAML does not parse, Ray's config preparation or
    schema rejects it, or (with botocore installed) a ``node_config`` does not fit EC2
    ``RunInstances``. Raises ``FileNotFoundError`` if there is no such file.
    """
    source = str(path)
    text = Path(path).read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ClusterConfigError(f"{source}: not valid YAML: {exc}") from None
    config = prepare_and_validate(raw, source)
    ec2_errors = ec2_node_config_errors(config)
    if ec2_errors:
        raise ClusterConfigError(
            f"{source}: EC2 RunInstances would reject a node_config:\n" + "\n".join(ec2_errors)
        )
    return check_rules(config)


def prepare_and_validate(raw: Any, source: str = "<config>") -> dict[str, Any]:
    """Run Ray's ``prepare_config`` + ``validate_config`` on a loaded config; return the
    prepared (defaults-merged) copy. ``raw`` is not modified.

    Raises :class:`ClusterConfigError` naming ``source``, the offending key path and Ray's
    message (for a jsonschema error), or the exception Ray raised while preparing.
    """
    if not isinstance(raw, dict):
        raise ClusterConfigError(
            f"{source}: a cluster config is a mapping, got {type(raw).__name__}"
        )
    provider = raw.get("provider")
    if not isinstance(provider, dict) or not isinstance(provider.get("type"), str):
        raise ClusterConfigError(
            f"{source}: 'provider' must be a mapping with a 'type' (aws, gcp, local, ...)"
        )
    import jsonschema

    prepare_config, validate_config = _ray_private_validators()
    quiet = logging.getLogger("ray.autoscaler._private.util")  # "setting max workers ..." INFO
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        config = prepare_config(copy.deepcopy(raw))
        validate_config(config)
    except jsonschema.ValidationError as exc:
        where = ".".join(str(part) for part in exc.absolute_path) or "<top level>"
        raise ClusterConfigError(
            f"{source}: Ray's cluster-config schema rejects {where}: {exc.message}"
        ) from None
    except Exception as exc:  # Ray raises ValueError, KeyError, ClickException, ... on bad input
        message = getattr(exc, "message", None) or str(exc)
        raise ClusterConfigError(
            f"{source}: Ray's config preparation rejects it: {type(exc).__name__}: {message}"
        ) from None
    finally:
        quiet.setLevel(level)
    return config


def _ray_private_validators() -> tuple[Callable, Callable]:
    """The two private Ray functions ``ray up`` uses to prepare and check a config."""
    import ray

    if ray.__version__ != RAY_API_VERSION:
        warnings.warn(
            f"study.cluster uses Ray's private autoscaler API as of Ray {RAY_API_VERSION}; "
            f"Ray {ray.__version__} is installed: check prepare_config/validate_config still "
            "behave the same (tests/test_cluster.py).",
            stacklevel=3,
        )
    try:
        from ray.autoscaler._private.util import prepare_config, validate_config
    except ImportError as exc:  # pragma: no cover - only on an incompatible Ray
        raise RuntimeError(
            f"Ray {ray.__version__} no longer provides ray.autoscaler._private.util."
            f"prepare_config/validate_config (written against Ray {RAY_API_VERSION})"
        ) from exc
    return prepare_config, validate_config


def ec2_node_config_errors(config: dict[str, Any]) -> list[str]:
    """Check each AWS ``node_config`` against EC2 ``RunInstances``' request shape.

    Uses botocore's ``ParamValidator`` with the service model shipped in botocore: no
    credentials, no network. Catches unknown parameters (``MarketTyp``) and wrong types
    (``VolumeSize: "200GB"``); cannot know whether an AMI or instance type exists in a region.
    Returns ``[]`` for non-AWS providers and when botocore is not installed.
    """
    if config.get("provider", {}).get("type") != "aws":
        return []
    try:
        shape = _run_instances_shape()
    except ImportError:
        return []
    from botocore.validate import ParamValidator

    errors = []
    for name, node_type in config.get("available_node_types", {}).items():
        params = copy.deepcopy(node_type.get("node_config", {}))
        # Ray's own key: Ray picks one subnet of the list for each RunInstances call.
        subnets = params.pop("SubnetIds", None)
        if subnets:
            params["SubnetId"] = subnets[0]
        params.setdefault("MinCount", 1)
        params.setdefault("MaxCount", 1)
        report = ParamValidator().validate(params, shape)
        if report.has_errors():
            errors.append(f"available_node_types.{name}.node_config: {report.generate_report()}")
    return errors


@functools.lru_cache(maxsize=1)
def _run_instances_shape() -> Any:
    import botocore.session

    model = botocore.session.get_session().get_service_model("ec2")
    return model.operation_model("RunInstances").input_shape


# --------------------------------------------------------------------------------------------
# Layer 3: this project's rules on the prepared config.


def check_rules(config: dict[str, Any]) -> list[str]:
    """Apply every rule in ``RULES`` to a prepared config (see :func:`prepare_and_validate`).

    Returns the violations in ``RULES`` order, without duplicates.
    """
    violations: list[str] = []
    for rule in RULES:
        try:
            problems = rule(config)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            # A shape Ray's schema leaves open (node_config, IpPermissions items) is odd.
            problems = [f"{rule.__name__}: cannot read the config ({type(exc).__name__}: {exc})"]
        for problem in problems:
            if problem not in violations:
                violations.append(problem)
    return violations


def _is_aws(config: dict[str, Any]) -> bool:
    return config.get("provider", {}).get("type") == "aws"


def _head(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    name = config["head_node_type"]
    return name, config["available_node_types"][name]


def _workers(config: dict[str, Any]) -> Iterable[tuple[str, dict[str, Any]]]:
    head = config["head_node_type"]
    return ((n, t) for n, t in config["available_node_types"].items() if n != head)


def rule_head_runs_no_trials(config: dict[str, Any]) -> list[str]:
    """The head advertises no CPU, so Tune never places a trial next to the driver and GCS."""
    if config["provider"]["type"] == "local":
        # The local provider does not pass `resources` to `ray start` (updater.py skips
        # RAY_OVERRIDE_RESOURCES for it): only the start command can set the head's CPUs.
        if not any(_option(call, "--num-cpus") == "0" for call in _head_starts(config)):
            return [
                "head_start_ray_commands: the local provider does not apply `resources`, so "
                "`ray start --head` needs --num-cpus=0 to keep trials off the head"
            ]
        return []
    name, head = _head(config)
    cpu = head.get("resources", {}).get("CPU")
    if cpu != 0:
        found = "missing (the instance's CPUs are advertised)" if cpu is None else f"CPU: {cpu}"
        return [
            f"available_node_types.{name}.resources: the head must advertise CPU: 0 so that "
            f"no trial is scheduled on it; found {found}"
        ]
    return []


def rule_head_on_demand(config: dict[str, Any]) -> list[str]:
    """The head is on-demand: a spot interruption would take the sweep driver with it."""
    if not _is_aws(config):
        return []
    name, head = _head(config)
    market = head["node_config"].get("InstanceMarketOptions", {}).get("MarketType")
    if market == "spot":
        return [
            f"available_node_types.{name}.node_config.InstanceMarketOptions: the head must "
            "not be spot (it runs the Tune driver, the searcher and the autoscaler)"
        ]
    return []


def rule_images_pinned(config: dict[str, Any]) -> list[str]:
    """Every node type names an explicit AMI id (AMI ids are per region)."""
    if not _is_aws(config):
        return []
    problems = []
    for name, node_type in config["available_node_types"].items():
        image = node_type["node_config"].get("ImageId")
        if not isinstance(image, str) or not _AMI_ID.match(image):
            problems.append(
                f"available_node_types.{name}.node_config.ImageId: {image!r} is not a pinned "
                "AMI id (ami-...); `latest_dlami` or no ImageId makes Ray 2.60 use its "
                "built-in DEFAULT_AMI, an Ubuntu 18.04 Deep Learning AMI"
            )
    return problems


def rule_workers_have_instance_profile(config: dict[str, Any]) -> list[str]:
    """Every worker type has an IAM instance profile: Ray gives only the head a role, and
    trials on workers write checkpoints and results to S3."""
    if not _is_aws(config):
        return []
    return [
        f"available_node_types.{name}.node_config: no IamInstanceProfile; Ray gives workers "
        "no IAM role, so trials there cannot write checkpoints and results to S3"
        for name, node_type in _workers(config)
        if not node_type["node_config"].get("IamInstanceProfile")
    ]


def rule_own_security_groups(config: dict[str, Any]) -> list[str]:
    """Every AWS node type names its security group: for a node type without one, Ray 2.60
    creates a group with SSH open to 0.0.0.0/0 (``provider.security_group`` only adds rules)."""
    if not _is_aws(config):
        return []
    problems = []
    for name, node_type in config["available_node_types"].items():
        node_config = node_type["node_config"]
        interfaces = node_config.get("NetworkInterfaces") or []
        if node_config.get("SecurityGroupIds") or (
            interfaces and all(i.get("Groups") for i in interfaces)
        ):
            continue
        problems.append(
            f"available_node_types.{name}.node_config: no SecurityGroupIds; Ray then creates "
            "a security group with SSH (22) open to 0.0.0.0/0 (provider.security_group rules "
            "are only added to it); create a group allowing SSH from your address only and "
            "name it here"
        )
    return problems


def rule_no_world_ingress(config: dict[str, Any]) -> list[str]:
    """No ingress rule in ``provider.security_group`` is open to 0.0.0.0/0 or ::/0."""
    rules = config.get("provider", {}).get("security_group", {}).get("IpPermissions", [])
    problems = []
    for i, rule in enumerate(rules):
        world = [r.get("CidrIp") for r in rule.get("IpRanges", []) if _is_world(r.get("CidrIp"))]
        world += [
            r.get("CidrIpv6") for r in rule.get("Ipv6Ranges", []) if _is_world(r.get("CidrIpv6"))
        ]
        if not world:
            continue
        low, high = _port_range(rule)
        named = [f"{p} ({what})" for p, what in SENSITIVE_PORTS.items() if low <= p <= high]
        ports = ", ".join(named) if named else f"{low}-{high}"
        problems.append(
            f"provider.security_group.IpPermissions[{i}]: opens port(s) {ports} to "
            f"{' and '.join(world)}; anyone reaching Ray's ports can run code on the cluster "
            "(use `ray dashboard cluster.yaml` and SSH from your address only)"
        )
    return problems


def _is_world(cidr: Any) -> bool:
    try:
        return ipaddress.ip_network(str(cidr), strict=False) in _WORLD
    except ValueError:
        return False


def _port_range(rule: dict[str, Any]) -> tuple[int, int]:
    if str(rule.get("IpProtocol", "-1")) in ("-1", "all"):
        return 0, 65535
    low, high = rule.get("FromPort", 0), rule.get("ToPort", 65535)
    return (0, 65535) if low in (-1, None) else (int(low), int(high))


def rule_dashboard_on_loopback(config: dict[str, Any]) -> list[str]:
    """The head's dashboard (which also serves the Jobs API) listens on 127.0.0.1 only."""
    starts = _head_starts(config)
    if not starts:
        return ["head_start_ray_commands: no `ray start --head` command"]
    problems = []
    for call in starts:
        host = _option(call, "--dashboard-host")
        if host != "127.0.0.1":
            found = (
                "does not set it (Ray's AWS default is 0.0.0.0)"
                if host is None
                else (f"binds it to {host}")
            )
            problems.append(
                "head_start_ray_commands: `ray start --head` must use "
                f"--dashboard-host=127.0.0.1 (reach it with `ray dashboard`); {found}"
            )
    return problems


def rule_token_auth(config: dict[str, Any]) -> list[str]:
    """Every ``ray start`` runs with ``RAY_AUTH_MODE=token`` (Ray 2.60's ``ray start`` leaves
    token auth off unless told; it must be on for every node)."""
    problems = []
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        for call in _ray_starts(config.get(key, [])):
            mode = call.env.get("RAY_AUTH_MODE")
            if mode != "token":
                found = "not set" if mode is None else f"RAY_AUTH_MODE={mode}"
                problems.append(
                    f"{key}: `{_short(call.text)}` must run with RAY_AUTH_MODE=token ({found}); "
                    "without it the dashboard, Jobs API and client accept anyone"
                )
    return problems


def rule_token_shipped(config: dict[str, Any]) -> list[str]:
    """The auth token reaches every node through ``file_mounts`` from the user's home
    directory, never from a file inside the repository."""
    mounts = config.get("file_mounts") or {}
    token = {
        remote: local
        for remote, local in mounts.items()
        if str(remote).rstrip("/").endswith(".ray/auth_token")
    }
    if not token:
        return [
            "file_mounts: no entry ships ~/.ray/auth_token to the nodes; with "
            "RAY_AUTH_MODE=token every node needs the same token"
        ]
    return [
        f"file_mounts: the auth token comes from {local!r}, a relative path (inside the "
        "repository?); ship ~/.ray/auth_token and never commit a token"
        for local in token.values()
        if not str(local).startswith(("~", "/"))
    ]


def rule_usage_stats_disabled(config: dict[str, Any]) -> list[str]:
    """The head starts with ``--disable-usage-stats`` (``ray up`` otherwise exports
    ``RAY_USAGE_STATS_ENABLED=1`` to it and the head reports usage to Anyscale)."""
    return [
        "head_start_ray_commands: `ray start --head` needs --disable-usage-stats"
        for call in _head_starts(config)
        if "--disable-usage-stats" not in call.argv
        and call.env.get("RAY_USAGE_STATS_ENABLED") != "0"
    ]


def rule_ray_version_matches(config: dict[str, Any]) -> list[str]:
    """Setup commands install exactly the Ray version installed here: ``ray up`` and the
    cluster (head bootstrap config, autoscaler, pickled Tune state) must agree."""
    import ray

    installed = ray.__version__
    problems = []
    for where, commands in _setup_lists(config):
        pins = [(cmd, v) for cmd in commands for v in _ray_pins(cmd)]
        if not pins:
            problems.append(
                f"{where}: no setup command installs ray; pin "
                f'"ray[default,tune]=={installed}" (the version installed here)'
            )
        for cmd, version in pins:
            if version != installed:
                found = "without an exact version" if version is None else f"ray {version}"
                problems.append(
                    f"setup command `{_short(cmd)}` installs {found}, but ray {installed} is "
                    "installed here; `ray up` and the cluster must run the same Ray"
                )
    return problems


def rule_package_version_matches(config: dict[str, Any]) -> list[str]:
    """Setup commands install this package at the version installed here (a pinned release,
    not whatever a node happens to fetch)."""
    installed = _package_version()
    problems = []
    for where, commands in _setup_lists(config):
        pins = [
            (cmd, m.group("version") if m else None)
            for cmd in commands
            for token in _install_args(cmd)
            if re.search(r"imbalance[-_]study", token)
            for m in [_PACKAGE_PIN.search(token)]
        ]
        if not pins:
            problems.append(f"{where}: no setup command installs {_PACKAGE} at a pinned version")
        for cmd, version in pins:
            if version != installed:
                found = "without a version" if version is None else f"version {version}"
                problems.append(
                    f"setup command `{_short(cmd)}` installs {_PACKAGE} {found}, but "
                    f"{installed} is the version here"
                )
    return problems


def rule_nodes_terminated(config: dict[str, Any]) -> list[str]:
    """Nodes are terminated, not stopped (stopped GPU nodes keep billing their disks)."""
    if _is_aws(config) and config["provider"].get("cache_stopped_nodes", True) is not False:
        return [
            "provider.cache_stopped_nodes: set it to false; Ray's default (true) stops "
            "nodes instead of terminating them, and stopped nodes keep billing EBS"
        ]
    return []


RULES: tuple[Callable[[dict[str, Any]], list[str]], ...] = (
    rule_head_runs_no_trials,
    rule_head_on_demand,
    rule_images_pinned,
    rule_workers_have_instance_profile,
    rule_own_security_groups,
    rule_no_world_ingress,
    rule_dashboard_on_loopback,
    rule_token_auth,
    rule_token_shipped,
    rule_usage_stats_disabled,
    rule_ray_version_matches,
    rule_package_version_matches,
    rule_nodes_terminated,
)


# --------------------------------------------------------------------------------------------
# Shell-command parsing (enough for setup and start commands; not a shell).


@dataclass
class _Call:
    """One simple command of a shell line: its environment assignments and argv."""

    text: str
    env: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)


_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def _calls(command: str) -> list[_Call]:
    """Split a shell line into simple commands, with ``VAR=value`` prefixes, ``env ...`` and
    earlier ``export VAR=value`` of the same line applied as each command's environment."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes: fall back to whitespace
        tokens = command.split()
    exported: dict[str, str] = {}
    calls, current = [], []
    for token in [*tokens, ";"]:
        if token and all(c in "();<>|&" for c in token):
            if current:
                call = _Call(" ".join(current), dict(exported))
                words = list(current)
                if words and words[0] in ("env", "export"):
                    is_export = words.pop(0) == "export"
                else:
                    is_export = False
                while words and _ASSIGNMENT.match(words[0]):
                    name, _, value = words.pop(0).partition("=")
                    (exported if is_export else call.env)[name] = value
                if is_export:
                    call.env.update(exported)
                call.argv = words
                calls.append(call)
            current = []
        else:
            current.append(token)
    return calls


def _ray_starts(commands: Iterable[str]) -> list[_Call]:
    return [
        call
        for command in commands
        for call in _calls(command)
        if len(call.argv) >= 2 and Path(call.argv[0]).name == "ray" and call.argv[1] == "start"
    ]


def _head_starts(config: dict[str, Any]) -> list[_Call]:
    return [c for c in _ray_starts(config.get("head_start_ray_commands", [])) if "--head" in c.argv]


def _option(call: _Call, name: str) -> str | None:
    """Value of ``--name=value`` or ``--name value`` in a call's argv (last one wins)."""
    value = None
    for i, arg in enumerate(call.argv):
        if arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
        elif arg == name and i + 1 < len(call.argv):
            value = call.argv[i + 1]
    return value


def _install_args(command: str) -> list[str]:
    """Arguments after ``install`` (pip, uv pip, ...) that are not options."""
    args = []
    for call in _calls(command):
        if "install" in call.argv:
            rest = call.argv[call.argv.index("install") + 1 :]
            args += [a for a in rest if not a.startswith("-")]
    return args


def _ray_pins(command: str) -> list[str | None]:
    """Ray versions a setup command installs: ``ray[...]==V`` gives V, a ray wheel gives its
    version, any other ray requirement (unpinned, ``>=``) gives None."""
    versions: list[str | None] = []
    for arg in _install_args(command):
        wheel = arg.rsplit("/", 1)[-1]
        match = _RAY_REQUIREMENT.match(arg)
        if wheel.startswith("ray-") and wheel.endswith(".whl"):
            versions.append(wheel.split("-")[1])
        elif match:
            spec = (match.group("spec") or "").strip()
            if spec.startswith("@"):
                url_wheel = spec.rsplit("/", 1)[-1]
                ok = url_wheel.startswith("ray-") and url_wheel.endswith(".whl")
                versions.append(url_wheel.split("-")[1] if ok else None)
            elif spec.startswith("==") and not spec.startswith("==="):
                versions.append(spec[2:].strip().split(";")[0].strip() or None)
            else:
                versions.append(None)
    return versions


def _setup_lists(config: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """The full setup-command list of the head and of each distinct worker setup, as
    ``prepare_config`` leaves them (``setup_commands`` already merged in)."""
    lists = [("head_setup_commands (with setup_commands)", config.get("head_setup_commands", []))]
    workers = list(_workers(config))  # none for the local provider: one type for all nodes
    if not workers or any("worker_setup_commands" not in t for _, t in workers):
        lists.append(
            ("worker_setup_commands (with setup_commands)", config.get("worker_setup_commands", []))
        )
    lists += [
        (f"available_node_types.{name}.worker_setup_commands", t["worker_setup_commands"])
        for name, t in workers
        if "worker_setup_commands" in t
    ]
    return lists


def _package_version() -> str:
    try:
        return importlib.metadata.version(_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        from study import __version__

        return __version__


def _short(command: str, limit: int = 90) -> str:
    flat = " ".join(command.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m study.cluster FILE...``: print OK or the problems of each cluster config."""
    parser = argparse.ArgumentParser(
        prog="python -m study.cluster",
        description="Validate Ray cluster-launcher configs offline (Ray's schema + this "
        "project's safety rules). Exit 0 OK, 1 rule violations, 2 Ray/EC2 rejects a file.",
    )
    parser.add_argument("configs", nargs="+", metavar="FILE", help="e.g. cluster.yaml")
    args = parser.parse_args(argv)
    status = 0
    for path in args.configs:
        try:
            violations = validate_cluster_config(path)
        except (ClusterConfigError, FileNotFoundError) as exc:
            print(f"{path}: INVALID\n  {exc}", file=sys.stderr)
            status = 2
            continue
        if violations:
            print(f"{path}: {len(violations)} problem(s)")
            for problem in violations:
                print(f"  - {problem}")
            status = max(status, 1)
        else:
            print(f"{path}: OK")
    return status


if __name__ == "__main__":
    sys.exit(main())
