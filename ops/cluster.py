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
   They judge the effective configuration, not its text: security-group rules are united as
   EC2 unites them (``0.0.0.0/1`` + ``128.0.0.0/1`` is the whole internet); shell command
   lists are read as bash runs them, so a ``ray start`` behind ``false &&``, ``exit 0``, a
   comment or ``echo`` is no start, and a command whose effect cannot be read (``eval``,
   ``bash -c "$CMD"``, command substitution) is a violation, not a pass; the auth token's
   source is followed through ``file_mounts`` and symbolic links to the local file.
   They return a list of violations; empty means OK.

Command line: ``study-cluster-check cluster.yaml [more.yaml ...]`` prints ``OK`` or the
violations; exit status 0 (OK), 1 (rule violations) or 2 (Ray or EC2 rejects the file).
"""

from __future__ import annotations

import argparse
import copy
import functools
import importlib.metadata
import ipaddress
import itertools
import logging
import os
import posixpath
import re
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
    return check_rules(config, Path(path).resolve().parent)


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
            f"ops.cluster uses Ray's private autoscaler API as of Ray {RAY_API_VERSION}; "
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

Rule = Callable[[dict[str, Any], Path], list[str]]


def check_rules(config: dict[str, Any], config_dir: Path | None = None) -> list[str]:
    """Apply every rule in ``RULES`` to a prepared config (see :func:`prepare_and_validate`).

    ``config_dir`` is the directory of the config file (default: the current directory); the
    auth token must not come from inside it. Returns the violations in ``RULES`` order,
    without duplicates.
    """
    directory = Path.cwd() if config_dir is None else config_dir
    violations: list[str] = []
    for rule in RULES:
        try:
            problems = rule(config, directory)
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


def rule_head_runs_no_trials(config: dict[str, Any], config_dir: Path) -> list[str]:
    """The head advertises no CPU, so Tune never places a trial next to the driver and GCS."""
    if config["provider"]["type"] == "local":
        # The local provider does not pass `resources` to `ray start` (updater.py skips
        # RAY_OVERRIDE_RESOURCES for it): only the start command can set the head's CPUs,
        # and every head start that may run must.
        starts = _head_starts(config)
        if not starts or any(_option(call, "--num-cpus") != "0" for _, call in starts):
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


def rule_head_on_demand(config: dict[str, Any], config_dir: Path) -> list[str]:
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


def rule_images_pinned(config: dict[str, Any], config_dir: Path) -> list[str]:
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


def rule_workers_have_instance_profile(config: dict[str, Any], config_dir: Path) -> list[str]:
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


def rule_imds_v2_only(config: dict[str, Any], config_dir: Path) -> list[str]:
    """Every AWS node type requires IMDSv2 with a hop limit of 1.

    IMDSv1 answers a plain GET, so any server-side request forgery on a node (a trial's data
    loader fetching a URL, a dashboard proxy) reads the instance role's credentials, and the
    head's role can launch instances and pass roles. ``HttpTokens: required`` refuses IMDSv1.
    ``HttpPutResponseHopLimit: 1`` keeps the token from crossing a network hop: containers on
    a bridge network cannot get one, and Ray's own containers (``docker:``) run with
    ``--net=host``, so they need no second hop. Both are required explicitly: left out, the
    AMI's or the account's default applies (2 hops on AMIs with ``ImdsSupport: v2.0``), which
    nothing offline can see.
    """
    if not _is_aws(config):
        return []
    problems = []
    for name, node_type in config["available_node_types"].items():
        where = f"available_node_types.{name}.node_config.MetadataOptions"
        options = node_type["node_config"].get("MetadataOptions")
        if not isinstance(options, dict):
            problems.append(
                f"{where}: missing, so the AMI's or account's default applies (IMDSv1 allowed "
                "unless set otherwise, and a launch template cannot be checked offline); set "
                "{HttpTokens: required, HttpPutResponseHopLimit: 1}"
            )
            continue
        if options.get("HttpTokens") != "required":
            problems.append(
                f"{where}.HttpTokens: {options.get('HttpTokens')!r} allows IMDSv1, whose "
                "credentials any request forgery on the node can read; set HttpTokens: required"
            )
        if options.get("HttpPutResponseHopLimit") != 1:
            problems.append(
                f"{where}.HttpPutResponseHopLimit: {options.get('HttpPutResponseHopLimit')!r}; "
                "set 1 (more lets bridged containers fetch the role's credentials; Ray's "
                "containers use --net=host and need no extra hop)"
            )
    return problems


def rule_own_security_groups(config: dict[str, Any], config_dir: Path) -> list[str]:
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


# Most addresses, per IP version, that may reach a sensitive port: one /8's worth of IPv4
# (so 10.0.0.0/8, the largest private range, passes and 0.0.0.0/7 does not) and one /32's
# worth of IPv6 (a whole ISP's allocation; an AWS VPC is a /56). Counted over the union of
# all rules' sources, so many small ranges add up.
MAX_SENSITIVE_SOURCES: dict[int, int] = {4: 2**24, 6: 2**96}
_WHOLE_SPACE = {4: 2**32, 6: 2**128}
_ALL_PROTOCOLS = "-1"
_PROTOCOL_NAMES = {"6": "tcp", "17": "udp", "1": "icmp", "58": "icmpv6", "all": _ALL_PROTOCOLS}
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class _Ingress:
    """One item of ``provider.security_group.IpPermissions``, read the way EC2 applies it."""

    index: int
    protocol: str  # "tcp", "udp", "icmp", ... or "-1" for every protocol
    low: int
    high: int
    sources: tuple[tuple[str, IPNetwork], ...]  # (CIDR as written, network)
    prefix_lists: tuple[str, ...]

    def opens(self, protocol: str, port: int) -> bool:
        return self.protocol in (protocol, _ALL_PROTOCOLS) and self.low <= port <= self.high


@dataclass(frozen=True)
class _Reach:
    """Sources of one IP version that together open a port: (rule index, CIDR) pairs and
    the number of addresses in their union."""

    sources: tuple[tuple[int, str], ...]
    version: int
    addresses: int


def rule_no_world_ingress(config: dict[str, Any], config_dir: Path) -> list[str]:
    """No port is open to the whole internet, and no sensitive port to a large part of it.

    Rules are combined as EC2 combines them: the sources of every rule that opens a port are
    united (``0.0.0.0/1`` in one rule and ``128.0.0.0/1`` in another open the port to
    everyone), per IP version, whether they sit in ``IpRanges`` or ``Ipv6Ranges`` and whether
    the rule names the port, a port range or all protocols (``-1``). A sensitive port
    (``SENSITIVE_PORTS``, TCP) may be reached from at most :data:`MAX_SENSITIVE_SOURCES`
    addresses per version; any other port, of any protocol, from less than everyone. The
    addresses of a managed prefix list are not in the config, so a prefix list on a
    sensitive port is a violation too.
    """
    permissions = config.get("provider", {}).get("security_group", {}).get("IpPermissions", [])
    rules, problems = [], []
    for i, permission in enumerate(permissions):
        rule, bad = _read_ingress(i, permission)
        rules.append(rule)
        problems += bad
    exposed: dict[tuple[tuple[int, str], ...], tuple[_Reach, list[str]]] = {}
    for port, what in SENSITIVE_PORTS.items():
        opening = [r for r in rules if r.opens("tcp", port)]
        problems += [
            f"provider.security_group.IpPermissions[{r.index}]: opens port {port} ({what}) "
            f"to prefix list(s) {', '.join(r.prefix_lists)}, whose addresses cannot be "
            "checked offline; name CIDRs"
            for r in opening
            if r.prefix_lists
        ]
        for reach in _reaches(opening, MAX_SENSITIVE_SOURCES):
            exposed.setdefault(reach.sources, (reach, []))[1].append(f"port {port} ({what})")
    for protocol in dict.fromkeys(r.protocol for r in rules):
        applying = [r for r in rules if r.protocol in (protocol, _ALL_PROTOCOLS)]
        bounds = sorted({r.low for r in applying} | {r.high + 1 for r in applying})
        for low, end in itertools.pairwise(bounds):
            opening = [r for r in applying if r.low <= low and end - 1 <= r.high]
            for reach in _reaches(opening, _WHOLE_SPACE):
                if protocol in ("tcp", "udp"):
                    ports = f"ports {low}-{end - 1}/{protocol}"
                else:
                    ports = "all traffic" if protocol == _ALL_PROTOCOLS else f"all {protocol}"
                exposed.setdefault(reach.sources, (reach, [ports]))
    for reach, openings in exposed.values():
        indices = dict.fromkeys(i for i, _ in reach.sources)
        where = " + ".join(f"IpPermissions[{i}]" for i in indices)
        cidrs = ", ".join(dict.fromkeys(cidr for _, cidr in reach.sources))
        if reach.addresses == _WHOLE_SPACE[reach.version]:
            size = f"together all of IPv{reach.version}"
        else:
            most = MAX_SENSITIVE_SOURCES[reach.version]
            size = f"{reach.addresses:,} addresses; a sensitive port allows at most {most:,}"
        problems.append(
            f"provider.security_group.{where}: open {', '.join(openings)} to {cidrs} ({size}); "
            "anyone reaching Ray's ports can run code on the cluster (use `ray dashboard "
            "cluster.yaml` and SSH from your address only)"
        )
    return problems


def _read_ingress(index: int, permission: dict[str, Any]) -> tuple[_Ingress, list[str]]:
    """The rule as EC2 applies it, and a problem for each CIDR that does not parse."""
    protocol = str(permission.get("IpProtocol", _ALL_PROTOCOLS)).lower()
    protocol = _PROTOCOL_NAMES.get(protocol, protocol)
    low, high = permission.get("FromPort"), permission.get("ToPort")
    if protocol not in ("tcp", "udp") or low in (-1, None):  # ports do not apply, or all
        low, high = 0, 65535
    elif high in (-1, None):
        high = 65535
    sources, problems = [], []
    for key, cidr_key in (("IpRanges", "CidrIp"), ("Ipv6Ranges", "CidrIpv6")):
        for entry in permission.get(key, []):
            cidr = str(entry.get(cidr_key))
            try:
                sources.append((cidr, ipaddress.ip_network(cidr, strict=False)))
            except ValueError:
                problems.append(
                    f"provider.security_group.IpPermissions[{index}].{key}: {cidr!r} is not "
                    "a CIDR; cannot tell who may connect"
                )
    prefix_lists = tuple(str(p.get("PrefixListId")) for p in permission.get("PrefixListIds", []))
    return _Ingress(index, protocol, int(low), int(high), tuple(sources), prefix_lists), problems


def _reaches(rules: list[_Ingress], limit: dict[int, int]) -> list[_Reach]:
    """Per IP version, the united sources of ``rules`` if they hold more than ``limit``
    addresses or every address."""
    found = []
    for version, most in limit.items():
        sources = [(r.index, c, n) for r in rules for c, n in r.sources if n.version == version]
        # one IP version (filtered above), which typeshed's constrained TypeVar cannot see
        union = ipaddress.collapse_addresses(n for _, _, n in sources)  # type: ignore[type-var]
        addresses = sum(n.num_addresses for n in union)
        if addresses > most or addresses == _WHOLE_SPACE[version]:
            found.append(_Reach(tuple((i, c) for i, c, _ in sources), version, addresses))
    return found


def rule_ray_start_verifiable(config: dict[str, Any], config_dir: Path) -> list[str]:
    """Every command of the start lists can be read statically: nothing the checker cannot
    follow (``eval``, ``source``, ``bash -c "$CMD"``, command substitution, a shell reading a
    file or stdin, an interpreter, a command name or ``ray start`` option that is a variable)
    may decide how Ray starts."""
    return [
        f"{where}: cannot verify how Ray starts: `{_short(call.text)}` ({call.opaque})"
        for where, command in _numbered(_start_lists(config))
        for call in _plan(command)
        if call.opaque
    ]


def rule_dashboard_on_loopback(config: dict[str, Any], config_dir: Path) -> list[str]:
    """The head's dashboard (which also serves the Jobs API) listens on 127.0.0.1 only."""
    starts = _head_starts(config)
    if not starts:
        return ["head_start_ray_commands: no `ray start --head` command runs"]
    problems = []
    for where, call in starts:
        host = _option(call, "--dashboard-host")
        if host != "127.0.0.1":
            found = (
                "does not set it (Ray's AWS default is 0.0.0.0)"
                if host is None
                else (f"binds it to {host}")
            )
            problems.append(
                f"{where}: `ray start --head` must use --dashboard-host=127.0.0.1 (reach it "
                f"with `ray dashboard`); {found}"
            )
    return problems


def rule_token_auth(config: dict[str, Any], config_dir: Path) -> list[str]:
    """Every ``ray start`` that may run does so with ``RAY_AUTH_MODE=token`` (Ray 2.60's
    ``ray start`` leaves token auth off unless told; it must be on for every node)."""
    problems = []
    for where, call in _ray_starts(config):
        mode = call.env.get("RAY_AUTH_MODE")
        if mode != "token":
            found = "not set" if mode is None else f"RAY_AUTH_MODE={mode}"
            problems.append(
                f"{where}: `{_short(call.text)}` must run with RAY_AUTH_MODE=token ({found}); "
                "without it the dashboard, Jobs API and client accept anyone"
            )
    return problems


def rule_token_outside_repository(config: dict[str, Any], config_dir: Path) -> list[str]:
    """The auth token reaches every node as a file that ``file_mounts`` ships from outside the
    project: not from a relative path, the config's directory or any git work tree (symbolic
    links followed), and it is never written in the config (a literal ``RAY_AUTH_TOKEN``, a
    command that writes the token file) nor taken from a variable the checker cannot trace."""
    user = str(config.get("auth", {}).get("ssh_user", ""))
    problems = [
        f"{where}: sets RAY_AUTH_TOKEN to a literal; a token in the config is a committed "
        f"secret (ship {_TOKEN_PATH} with file_mounts instead)"
        for where in _inline_tokens(config, "")
    ]
    token_paths = set()
    for where, call in _ray_starts(config):
        value = call.env.get("RAY_AUTH_TOKEN")
        if value is not None and not _is_literal(value):  # literals: _inline_tokens
            problems.append(
                f"{where}: `{_short(call.text)}` takes the token from RAY_AUTH_TOKEN={value}, "
                f"whose source cannot be checked; ship {_TOKEN_PATH} with file_mounts"
            )
        token_paths.add(_node_path(call.env.get("RAY_AUTH_TOKEN_PATH", _TOKEN_PATH), user))
    token_paths = token_paths or {_node_path(_TOKEN_PATH, user)}
    for where, command in _numbered(_node_lists(config)):
        for call in _plan(command):
            copies = call.argv[1:] if call.argv and Path(call.argv[0]).name in _COPIERS else []
            if any(_node_path(t, user) in token_paths for t in [*call.writes, *copies]):
                problems.append(
                    f"{where}: `{_short(call.text)}` writes the auth token on the node, so the "
                    f"token or its source is in the config; ship {_TOKEN_PATH} with file_mounts"
                )
    mounts = (config.get("file_mounts") or {}).items()
    for path in sorted(token_paths):
        shipped = [
            (str(local), path[len(remote) :].lstrip("/"))
            for remote, local in ((_node_path(str(r), user), loc) for r, loc in mounts)
            if path == remote or path.startswith(remote.rstrip("/") + "/")
        ]
        if not shipped:
            problems.append(
                f"file_mounts: no entry ships {path} to the nodes; with RAY_AUTH_MODE=token "
                "every node needs the same token"
            )
        for local, inside in shipped:
            reason = _inside_project(local, inside, config_dir)
            if reason:
                source = f"{local.rstrip('/')}/{inside}" if inside else local
                problems.append(
                    f"file_mounts: the auth token ({path} on the nodes) comes from {source!r}, "
                    f"{reason}; keep it in ~/.ray/auth_token (`ray get-auth-token "
                    "--generate`) and never commit a token"
                )
    return problems


_TOKEN_PATH = "~/.ray/auth_token"  # where Ray 2.60 looks without RAY_AUTH_TOKEN(_PATH)
_TOKEN_LITERAL = re.compile(r"\bRAY_AUTH_TOKEN\s*[=:]\s*[\"']?(?!\$)[^\s\"';&|$]")
_COPIERS = frozenset({"tee", "cp", "mv", "install", "ln", "dd", "rsync", "curl", "wget"})


def _inline_tokens(node: Any, where: str) -> Iterable[str]:
    """Paths of the config (``setup_commands[2]``) where a literal RAY_AUTH_TOKEN is set, as
    ``RAY_AUTH_TOKEN=...`` in any string or as a mapping key."""
    if isinstance(node, dict):
        for key, value in node.items():
            inner = f"{where}.{key}" if where else str(key)
            if key == "RAY_AUTH_TOKEN" and _is_literal(value):
                yield inner
            yield from _inline_tokens(value, inner)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _inline_tokens(value, f"{where}[{i}]")
    elif isinstance(node, str) and _TOKEN_LITERAL.search(node):
        yield where


def _is_literal(value: Any) -> bool:
    """Whether a RAY_AUTH_TOKEN value is a token itself, not a reference ($VAR) to one."""
    text = "" if value is None else str(value).strip()
    return bool(text) and not text.startswith("$")


def _node_path(path: str, ssh_user: str) -> str:
    """A path on a node, with the login user's home directory written as ``~``."""
    homes = ["${HOME}", "$HOME", *([f"/home/{ssh_user}"] if ssh_user else [])]
    homes += ["/root"] if ssh_user == "root" else []
    for home in homes:
        if path == home or path.startswith(home + "/"):
            path = "~" + path[len(home) :]
    return posixpath.normpath(path)


def _inside_project(local: str, inside: str, config_dir: Path) -> str | None:
    """Why the local file ``local``/``inside`` is not a safe token source, or None."""
    if not local.startswith(("~", "/")):
        return "a relative path (inside the repository?)"
    source = (Path(os.path.expanduser(local)) / inside).resolve()
    directory = config_dir.resolve()
    if source == directory or directory in source.parents:
        return f"inside the cluster config's directory {directory}"
    work_tree = next((p for p in source.parents if (p / ".git").exists()), None)
    if work_tree is not None:
        return f"inside the git work tree {work_tree}"
    return None


def rule_usage_stats_disabled(config: dict[str, Any], config_dir: Path) -> list[str]:
    """The head starts with ``--disable-usage-stats`` (``ray up`` otherwise exports
    ``RAY_USAGE_STATS_ENABLED=1`` to it and the head reports usage to Anyscale)."""
    return [
        f"{where}: `ray start --head` needs --disable-usage-stats"
        for where, call in _head_starts(config)
        if "--disable-usage-stats" not in call.argv
        and call.env.get("RAY_USAGE_STATS_ENABLED") != "0"
    ]


def rule_ray_version_matches(config: dict[str, Any], config_dir: Path) -> list[str]:
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


def rule_package_version_matches(config: dict[str, Any], config_dir: Path) -> list[str]:
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


def rule_nodes_terminated(config: dict[str, Any], config_dir: Path) -> list[str]:
    """Nodes are terminated, not stopped (stopped GPU nodes keep billing their disks)."""
    if _is_aws(config) and config["provider"].get("cache_stopped_nodes", True) is not False:
        return [
            "provider.cache_stopped_nodes: set it to false; Ray's default (true) stops "
            "nodes instead of terminating them, and stopped nodes keep billing EBS"
        ]
    return []


RULES: tuple[Rule, ...] = (
    rule_head_runs_no_trials,
    rule_head_on_demand,
    rule_images_pinned,
    rule_workers_have_instance_profile,
    rule_imds_v2_only,
    rule_own_security_groups,
    rule_no_world_ingress,
    rule_ray_start_verifiable,
    rule_dashboard_on_loopback,
    rule_token_auth,
    rule_token_outside_repository,
    rule_usage_stats_disabled,
    rule_ray_version_matches,
    rule_package_version_matches,
    rule_nodes_terminated,
)


# --------------------------------------------------------------------------------------------
# Which commands of a command list run, with what environment (a static reading, not a shell).
#
# Ray runs each item of a command list in its own shell, `bash --login -c -i 'source
# ~/.bashrc; export ... && (ITEM)'` (command_runner._with_interactive): `exit` ends only that
# item and an `export` is gone by the next one. Within an item the reading follows quoting,
# comments, newlines, `;`, `&`, `&&`, `||`, `|`, `!`, `exit`, and the commands whose status
# is fixed (true, false, :, echo, printf), so `false && ray start` and `exit 0; ray start`
# never run. From the first compound command (if, while, for, case, subshell, braces) on it
# follows no control flow: every later command may run, and exports there do not count.
# Errors lean one way: a command that may run is judged; an export counts only where it
# certainly happens.

_START_LISTS = ("head_start_ray_commands", "worker_start_ray_commands")
_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "fish"})
_INTERPRETER = re.compile(r"^(?:python[\d.]*|perl|ruby|node|php|lua|Rscript|java)$")
_UNSEEN_CODE = frozenset({"eval", "source", ".", "trap", "alias"})
# Commands whose arguments are only data: "ray start" among them starts nothing.
_DATA_ARGUMENTS = frozenset(
    "echo printf logger test [ [[ : true false grep exit export unset".split()
)
_FIXED_STATUS = {"true": 0, ":": 0, "echo": 0, "printf": 0, "false": 1}
_WRAPPERS = frozenset({"exec", "command", "builtin", "nohup", "setsid", "time"})
_RESERVED = frozenset(
    "if then elif else fi while until do done for case esac select function { }".split()
)
_OPERATORS = sorted(
    [*"&& || ;;& ;; ;& |& &>> &> >> >& >| <<< <<- << <& <> ; & | ( ) < >".split(), "\n"],
    key=len,
    reverse=True,
)
_REDIRECTIONS = frozenset(o for o in _OPERATORS if "<" in o or ">" in o)
_BREAK = frozenset(" \t\n;&|()<>")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_PARAMETER = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*|[0-9@*#?$!-]|'[^']*')?")  # also $'...'
_RAY_HEAD_IP = re.compile(r"\$(?:RAY_HEAD_IP\b|\{RAY_HEAD_IP\})")  # set by Ray on workers
_RAY_START_TEXT = re.compile(r"(?:^|[\s/'\"=;&|(])ray\s+(?:\S+\s+)*?start\b")


@dataclass
class _Call:
    """One simple command that may run: its environment, argv and redirection targets, and,
    when the checker cannot follow what it runs, why."""

    text: str
    env: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)
    opaque: str | None = None


@dataclass(frozen=True)
class _Token:
    """A word (quotes and escapes removed, expansions left as written) or an operator."""

    text: str
    operator: bool = False
    expands: bool = False  # `$...`, or a glob or brace pattern, outside single quotes
    substitutes: bool = False  # command or process substitution: runs a command


@dataclass
class _Simple:
    words: list[_Token] = field(default_factory=list)
    redirects: list[tuple[str, _Token]] = field(default_factory=list)  # (operator, target)


@dataclass
class _Pipeline:
    connector: str  # ";", "&&" or "||": how it follows the previous pipeline
    commands: list[_Simple] = field(default_factory=list)
    negated: bool = False
    background: bool = False
    compound: bool = False  # at or after a compound command: control flow is not followed


def _plan(command: str, env: dict[str, str] | None = None) -> list[_Call]:
    """The simple commands of one shell command (a list item) that may run, in order, each
    with the environment it certainly gets (exports of the same item, ``VAR=value`` and
    ``env`` prefixes). ``bash -c 'literal script'`` is read as that script. A command that
    does not parse comes back as one opaque call."""
    try:
        tokens = _tokens(command)
        pipelines = _pipelines(tokens)
    except ValueError as exc:
        return [_Call(command, opaque=f"it does not parse: {exc}")]
    exported = dict(env or {})
    shell: dict[str, str] = {}  # unexported variables set on this line
    alive = {0}  # exit statuses the executions still running may have here
    calls: list[_Call] = []
    if any(
        t.text == "function" or (a.text, b.text) == ("(", ")")
        for t, a, b in zip(tokens, tokens[1:], tokens[2:], strict=False)
    ):
        calls.append(_Call(command, opaque="a shell function defined here may stand in for ray"))
    for pipeline in pipelines:
        if not alive:  # every execution has reached `exit`
            break
        if pipeline.compound:
            certain = False
        else:
            runs = alive
            if pipeline.connector != ";":
                runs = {s for s in alive if (s == 0) == (pipeline.connector == "&&")}
            if not runs:
                continue
            certain = runs == alive
        for simple in pipeline.commands:
            calls += _resolve(simple, exported)
        alone = len(pipeline.commands) == 1 and not pipeline.background
        if alone:
            _apply_assignments(pipeline.commands[0], exported, shell, certain)
        if not pipeline.compound:
            alive = (alive - runs) | _status(pipeline, alone)
    return calls


def _tokens(line: str) -> list[_Token]:
    """Split a shell line into words and operators as bash does (quotes, escapes, comments
    at the start of a word, line continuations); ValueError for an unclosed quote."""
    tokens: list[_Token] = []
    text, started, expands, substitutes = "", False, False, False
    i = 0
    while i < len(line):
        c = line[i]
        if c in _BREAK or (c == "#" and not started):
            if started and not (c in "<>" and text.isdigit()):  # `2>`: a descriptor, no word
                tokens.append(_Token(text, expands=expands, substitutes=substitutes))
                text, started, expands, substitutes = "", False, False, False
            if c == "#":  # a comment runs to the end of the line, the newline stays
                end = line.find("\n", i)
                i = len(line) if end < 0 else end
            elif c in " \t":
                i += 1
            elif c in "<>" and line.startswith("(", i + 1):  # process substitution
                end = _closing(line, i + 1)
                tokens.append(_Token(line[i:end], expands=True, substitutes=True))
                i = end
            else:
                op = next(o for o in _OPERATORS if line.startswith(o, i))
                tokens.append(_Token(op, operator=True))
                i += len(op)
            continue
        if line.startswith("\\\n", i):  # line continuation
            i += 2
            continue
        started = True
        if c == "\\":
            text += line[i + 1 : i + 2]
            i += 2
        elif c == "'":
            end = line.find("'", i + 1)
            if end < 0:
                raise ValueError("unclosed '")
            text += line[i + 1 : end]
            i = end + 1
        elif c == '"':
            i += 1
            while i < len(line) and line[i] != '"':
                if line[i] == "\\" and line[i + 1 : i + 2] in ('"', "\\", "$", "`", "\n"):
                    text += line[i + 1].replace("\n", "")
                    i += 2
                elif line[i] in "$`":
                    end = _expansion_end(line, i)
                    expands, substitutes = True, substitutes or _substitutes(line, i)
                    text += line[i:end]
                    i = end
                else:
                    text += line[i]
                    i += 1
            if i >= len(line):
                raise ValueError('unclosed "')
            i += 1
        elif c in "$`":
            end = _expansion_end(line, i)
            expands, substitutes = True, substitutes or _substitutes(line, i)
            text += line[i:end]
            i = end
        else:
            expands = expands or c in "*?[{"
            text += c
            i += 1
    if started:
        tokens.append(_Token(text, expands=expands, substitutes=substitutes))
    return tokens


def _substitutes(line: str, i: int) -> bool:
    return line[i] == "`" or line.startswith("$(", i)


def _expansion_end(line: str, i: int) -> int:
    """Index just past the expansion (``$X``, ``${...}``, ``$(...)``, backquotes) at ``i``."""
    if line[i] == "`":
        end = line.find("`", i + 1)
        if end < 0:
            raise ValueError("unclosed `")
        return end + 1
    if line.startswith("$(", i):
        return _closing(line, i + 1)
    if line.startswith("${", i):
        end = line.find("}", i)
        if end < 0:
            raise ValueError("unclosed ${")
        return end + 1
    match = _PARAMETER.match(line, i)
    if match is None:
        raise ValueError(f"no expansion at {line[i:]!r}")
    return match.end()


def _closing(line: str, i: int) -> int:
    """Index just past the parenthesis that closes the one at ``i``."""
    depth = 0
    for j in range(i, len(line)):
        depth += {"(": 1, ")": -1}.get(line[j], 0)
        if depth == 0:
            return j + 1
    raise ValueError("unclosed (")


def _pipelines(tokens: list[_Token]) -> list[_Pipeline]:
    """Group tokens into pipelines of simple commands, with their connectors."""
    pipelines: list[_Pipeline] = []
    pipeline, simple = _Pipeline(";"), _Simple()
    compound, redirection = False, ""
    for token in [*tokens, _Token(";", operator=True)]:
        if redirection:
            if token.operator:
                raise ValueError(f"{redirection!r} lacks its target")
            simple.redirects.append((redirection, token))
            redirection = ""
        elif not token.operator:
            if not simple.words and token.text in _RESERVED:
                compound = True
            elif not simple.words and not pipeline.commands and token.text == "!":
                pipeline.negated = not pipeline.negated
            else:
                simple.words.append(token)
        elif token.text in _REDIRECTIONS:
            redirection = token.text
        else:
            if simple.words or simple.redirects:
                pipeline.commands.append(simple)
            simple = _Simple()
            if token.text in ("|", "|&"):
                continue
            compound = compound or token.text in ("(", ")")
            if pipeline.commands:
                pipeline.background = token.text == "&"
                pipeline.compound = pipeline.compound or compound
                pipelines.append(pipeline)
            pipeline = _Pipeline(token.text if token.text in ("&&", "||") else ";")
            pipeline.compound = compound
    return pipelines


def _status(pipeline: _Pipeline, alone: bool) -> set[int]:
    """Exit statuses the pipeline may end with (0, 1: known; {0, 1}: unknown); empty for
    ``exit``, after which nothing more of the line runs."""
    if pipeline.background:
        return {0}
    argv = [w.text for w in pipeline.commands[-1].words if not _ASSIGNMENT.match(w.text)]
    if not argv:
        return {0, 1}
    if argv[0] == "exit" and alone:
        return set()
    fixed = _FIXED_STATUS.get(argv[0])
    statuses = {0, 1} if fixed is None else {fixed}
    return {1 - s for s in statuses} if pipeline.negated else statuses


def _apply_assignments(
    simple: _Simple, exported: dict[str, str], shell: dict[str, str], certain: bool
) -> None:
    """Carry ``export``, ``unset`` and plain assignments, run in the line's own shell, to the
    commands after them; an uncertain one leaves the variable unknown (not set)."""
    words = [w.text for w in simple.words]
    if words and words[0] in ("export", "unset"):
        unexport = words[0] == "unset" or "-n" in words
        for arg in (w for w in words[1:] if not w.startswith("-")):
            name, has_value, value = arg.partition("=")
            exported.pop(name, None)
            if words[0] == "unset":
                shell.pop(name, None)
            elif certain and not unexport and (has_value or name in shell):
                exported[name] = value if has_value else shell[name]
    elif words and all(_ASSIGNMENT.match(w) for w in words):
        for word in words:
            name, _, value = word.partition("=")
            for variables in (shell, exported) if name in exported else (shell,):
                if certain:
                    variables[name] = value
                else:
                    variables.pop(name, None)


def _resolve(simple: _Simple, exported: dict[str, str]) -> list[_Call]:
    """The call(s) one simple command makes: ``VAR=value`` prefixes, ``env`` and transparent
    wrappers (exec, nohup, ...) applied; ``bash -c 'script'`` read as its script."""
    call = _Call(
        " ".join(w.text for w in simple.words),
        dict(exported),
        writes=[t.text for op, t in simple.redirects if ">" in op],
    )
    words = list(simple.words)
    while words:
        head = words[0].text
        if _ASSIGNMENT.match(head):
            name, _, value = words.pop(0).text.partition("=")
            call.env[name] = value
        elif head in _WRAPPERS:
            words.pop(0)
            while words and words[0].text.startswith("-"):
                words.pop(0)
        elif head == "env":
            words.pop(0)
            while words and words[0].text.startswith("-"):
                option = words.pop(0).text
                if option in ("-", "-i", "--ignore-environment"):
                    call.env.clear()
                elif option in ("-u", "--unset") and words:
                    call.env.pop(words.pop(0).text, None)
                elif option.startswith("--unset="):
                    call.env.pop(option.partition("=")[2], None)
                else:
                    call.opaque = f"`env {option}` is not followed"
        else:
            break
    call.argv = [w.text for w in words]
    if call.argv[:1] == ["ray"] and "PATH" in call.env:
        call.opaque = "PATH is changed on this line, so `ray` may be another program"
    if any(t.substitutes for t in [*simple.words, *(t for _, t in simple.redirects)]):
        call.opaque = "command substitution runs commands the checker cannot see"
    elif words:
        script = _shell_script(words) if Path(words[0].text).name in _SHELLS else None
        if script is not None and not script.expands:
            return [call, *_plan(script.text, call.env)]
        call.opaque = call.opaque or _opacity(words, script)
    return [call]


def _opacity(words: list[_Token], script: _Token | None) -> str | None:
    """Why the checker cannot tell whether (or how) this command starts Ray, or None."""
    name = Path(words[0].text).name
    args = [w.text for w in words[1:]]
    if words[0].expands and words[0].text not in ("[", "[["):
        return f"the command name {words[0].text!r} is only known at run time"
    if name in _UNSEEN_CODE:
        return f"`{name}` runs code the checker cannot see"
    if name in _SHELLS:
        if script is None:
            return f"`{name}` reads its commands from a file or stdin"
        return f"`{name} -c` runs a script only known at run time"
    if _INTERPRETER.match(name):
        return f"`{name}` runs code the checker cannot see"
    if name == "ray":
        if "start" in args and args[0] != "start":
            return "options before `start` hide the subcommand; write `ray start ...`"
        if args[:1] == ["start"]:
            for word in words[2:]:
                if word.expands and set(_RAY_HEAD_IP.sub("", word.text)) & set("$*?[{"):
                    return f"`{word.text}` is only known at run time and may set any option"
        return None
    if name not in _DATA_ARGUMENTS and (
        "ray" in (Path(a).name for a in args) or _RAY_START_TEXT.search(" ".join(args))
    ):
        return f"`{name}` runs ray in a way the checker cannot follow"
    return None


def _shell_script(words: list[_Token]) -> _Token | None:
    """The script of ``bash [options] -c SCRIPT``, or None when the shell reads a file or
    stdin."""
    has_c = False
    rest = iter(words[1:])
    for word in rest:
        text = word.text
        if text == "--":
            continue
        if text in ("-o", "+o", "-O", "+O", "--rcfile", "--init-file"):
            next(rest, None)
        elif text.startswith(("-", "+")) and not text.startswith("--"):
            has_c = has_c or "c" in text
        elif not text.startswith("--"):
            return word if has_c else None
    return None


def _start_lists(config: dict[str, Any]) -> list[tuple[str, list[str]]]:
    return [(key, config.get(key) or []) for key in _START_LISTS]


def _node_lists(config: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """Every command list ``ray up`` runs on nodes, by config key (after ``prepare_config``
    the head and worker setup lists already begin with ``setup_commands``)."""
    keys = ("initialization_commands", "head_setup_commands", "worker_setup_commands")
    lists = [(key, config.get(key) or []) for key in keys]
    lists += [
        (f"available_node_types.{name}.{key}", node_type[key] or [])
        for name, node_type in config.get("available_node_types", {}).items()
        for key in ("initialization_commands", "worker_setup_commands")
        if key in node_type
    ]
    return lists + _start_lists(config)


def _numbered(lists: list[tuple[str, list[str]]]) -> Iterable[tuple[str, str]]:
    """(``key[i]``, command) for every command of the lists."""
    return ((f"{key}[{i}]", str(cmd)) for key, commands in lists for i, cmd in enumerate(commands))


def _ray_starts(config: dict[str, Any]) -> list[tuple[str, _Call]]:
    """Every ``ray start`` that may run on a node, with where it is in the config."""
    return [
        (where, call)
        for where, command in _numbered(_node_lists(config))
        for call in _plan(command)
        if len(call.argv) >= 2 and Path(call.argv[0]).name == "ray" and call.argv[1] == "start"
    ]


def _head_starts(config: dict[str, Any]) -> list[tuple[str, _Call]]:
    return [(where, call) for where, call in _ray_starts(config) if "--head" in call.argv]


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
    """Arguments after ``install`` (pip, uv pip, ...) that are not options, in the commands
    of ``command`` that may run."""
    args = []
    for call in _plan(command):
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
    """``study-cluster-check FILE...``: print OK or the problems of each cluster config."""
    parser = argparse.ArgumentParser(
        prog="study-cluster-check",
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
