"""cluster.yaml and its offline validator (ops.cluster): Ray's own schema checks and our
safety rules, exercised on the shipped file and on mutated copies. No cloud, no network."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import ray
import yaml

from ops.cluster import ClusterConfigError, main, validate_cluster_config

REPO = Path(__file__).resolve().parent.parent
CLUSTER_YAML = REPO / "cluster.yaml"
HEAD = "ray.head.cpu"
GPU1, GPU4 = "ray.worker.gpu1", "ray.worker.gpu4"


@pytest.fixture(scope="module")
def shipped() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture
def config(shipped) -> dict:
    """A fresh copy of the shipped config to mutate (YAML aliases stay shared, as in the file)."""
    return copy.deepcopy(shipped)


@pytest.fixture(autouse=True)
def home(tmp_path_factory, monkeypatch) -> Path:
    """A home directory of its own, outside every config directory and git work tree, so
    that where ``~/.ray/auth_token`` lives does not depend on the machine running the tests."""
    path = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(path))
    return path


@pytest.fixture
def check(tmp_path):
    """Write a config to tmp_path/cluster.yaml and validate it, as a user would."""

    def run(cfg: dict) -> list[str]:
        path = tmp_path / "cluster.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return validate_cluster_config(path)

    return run


def _replace_in(commands: list[str], old: str, new: str) -> list[str]:
    assert any(old in c for c in commands), f"{old!r} not in {commands}"
    return [c.replace(old, new) for c in commands]


def _only(violations: list[str], *fragments: str) -> str:
    """The single violation; it must contain every fragment."""
    assert len(violations) == 1, violations
    for fragment in fragments:
        assert fragment in violations[0], (fragment, violations[0])
    return violations[0]


# --- the shipped file ------------------------------------------------------------------------


def test_shipped_cluster_yaml_passes():
    """The committed cluster.yaml passes Ray's validation and breaks none of our rules."""
    assert validate_cluster_config(CLUSTER_YAML) == []


def test_shipped_layout_cpu_head_and_two_gpu_worker_types(shipped):
    """A CPU-only on-demand head that takes no trials, and a single-GPU and a multi-GPU spot
    worker type, both scaling from zero."""
    types = shipped["available_node_types"]
    head = types[shipped["head_node_type"]]
    assert head["resources"] == {"CPU": 0}
    assert "InstanceMarketOptions" not in head["node_config"]
    workers = {n: t for n, t in types.items() if n != shipped["head_node_type"]}
    assert sorted(t["resources"]["GPU"] for t in workers.values()) == [1, 4]
    for node_type in workers.values():
        assert node_type["min_workers"] == 0
        assert node_type["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert sum(t["max_workers"] for t in workers.values()) <= shipped["max_workers"]
    assert shipped["provider"]["cache_stopped_nodes"] is False


def test_shipped_pins_mirror_pyproject(shipped):
    """The Ray and Optuna versions installed on the nodes are pyproject.toml's pins."""
    pyproject = (REPO / "pyproject.toml").read_text()
    setup = " ".join(shipped["setup_commands"])
    for package in ("ray", "optuna"):
        pinned = re.search(rf'"{package}(?:\[[^\]]*\])?==([^"]+)"', pyproject).group(1)
        on_nodes = re.findall(rf"\b{package}(?:\[[^\]]*\])?==([\w.]+)", setup)
        assert on_nodes == [pinned], (package, on_nodes, pinned)


def test_shipped_token_comes_from_home_not_repo(shipped):
    """The auth token is copied from ~/.ray/auth_token and no token file is in the repo."""
    assert shipped["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert not list(REPO.glob("**/auth_token"))


# --- Ray's own validation (raises) -----------------------------------------------------------


def test_typo_top_level_key_is_a_ray_schema_error_naming_the_key(config, check):
    """Ray's schema forbids unknown top-level keys; the error names the file and the key."""
    config["head_setup_command"] = config.pop("head_setup_commands")
    with pytest.raises(ClusterConfigError, match="head_setup_command' was unexpected") as err:
        check(config)
    assert "cluster.yaml" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_fractional_cpu_resource_is_a_ray_type_error(config, check):
    """Ray's schema takes integer resources only: CPU 0.5 is rejected, with its key path."""
    config["available_node_types"][HEAD]["resources"]["CPU"] = 0.5
    with pytest.raises(ValueError, match=r"available_node_types\.ray\.head\.cpu\.resources\.CPU"):
        check(config)
    with pytest.raises(ValueError, match="0.5 is not of type 'integer'"):
        check(config)


def test_unknown_head_node_type_is_rejected_by_ray(config, check):
    """Ray's cross-field check: head_node_type must be one of available_node_types."""
    config["head_node_type"] = "ray.head.missing"
    with pytest.raises(ClusterConfigError, match="head_node_type"):
        check(config)


def test_ec2_node_config_typo_is_rejected_when_botocore_is_installed(config, check):
    """With botocore, a node_config is checked against EC2 RunInstances (no credentials)."""
    pytest.importorskip("botocore")
    config["available_node_types"][GPU1]["node_config"]["InstanceMarketOptions"] = {
        "MarketTyp": "spot"
    }
    with pytest.raises(ClusterConfigError, match="MarketTyp"):
        check(config)


# --- our rules (returned as violations) ------------------------------------------------------


def test_latest_dlami_is_not_pinned(config, check):
    """Every ImageId must be a pinned AMI id: latest_dlami falls back to Ray's old DLAMI."""
    config["available_node_types"][GPU4]["node_config"]["ImageId"] = "latest_dlami"
    _only(check(config), GPU4, "ImageId", "latest_dlami", "not a pinned AMI id")


def test_dashboard_on_all_interfaces_is_a_violation(config, check):
    """The dashboard (and Jobs API) must bind 127.0.0.1, reached through `ray dashboard`."""
    config["head_start_ray_commands"] = _replace_in(
        config["head_start_ray_commands"], "--dashboard-host=127.0.0.1", "--dashboard-host=0.0.0.0"
    )
    _only(check(config), "--dashboard-host=127.0.0.1", "binds it to 0.0.0.0")


def test_missing_auth_token_mode_is_a_violation(config, check):
    """Every `ray start` (here the workers') must run with RAY_AUTH_MODE=token."""
    config["worker_start_ray_commands"] = _replace_in(
        config["worker_start_ray_commands"], "RAY_AUTH_MODE=token ", ""
    )
    _only(check(config), "worker_start_ray_commands", "RAY_AUTH_MODE=token", "not set")


def test_auth_mode_exported_in_an_earlier_command_does_not_count(config, check):
    """Ray runs each start command in its own shell: an `export` in a previous list item is
    gone by the time `ray start` runs; an export on the same line counts."""
    starts = _replace_in(config["head_start_ray_commands"], "RAY_AUTH_MODE=token ", "")
    config["head_start_ray_commands"] = ["export RAY_AUTH_MODE=token", *starts]
    _only(check(config), "head_start_ray_commands", "RAY_AUTH_MODE=token")
    config["head_start_ray_commands"] = [
        "export RAY_AUTH_MODE=token; " + c if "ray start" in c else c for c in starts
    ]
    assert check(config) == []


def test_world_open_dashboard_port_is_a_violation(config, check):
    """No ingress rule may open 8265 (dashboard / Jobs API) to 0.0.0.0/0."""
    config["provider"]["security_group"] = {
        "IpPermissions": [
            {
                "IpProtocol": "tcp",
                "FromPort": 8265,
                "ToPort": 8265,
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            }
        ]
    }
    _only(check(config), "IpPermissions[0]", "8265 (dashboard / Jobs API)", "0.0.0.0/0")


def test_all_traffic_from_ipv6_world_names_every_sensitive_port(config, check):
    """An all-protocol rule from ::/0 covers SSH, GCS, dashboard and client ports."""
    config["provider"]["security_group"] = {
        "IpPermissions": [{"IpProtocol": "-1", "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}]
    }
    _only(check(config), "22 (SSH)", "6379 (GCS)", "8265", "10001 (Ray Client)", "::/0")


def test_ssh_from_one_address_is_fine(config, check):
    """A rule from a single /32 (the user's address) is not world-open."""
    config["provider"]["security_group"] = {
        "IpPermissions": [
            {
                "IpProtocol": "tcp",
                "FromPort": 22,
                "ToPort": 22,
                "IpRanges": [{"CidrIp": "203.0.113.7/32"}],
            }
        ]
    }
    assert check(config) == []


def test_node_type_without_security_group_is_a_violation(config, check):
    """Without SecurityGroupIds Ray 2.60 creates a group with SSH open to 0.0.0.0/0."""
    del config["available_node_types"][GPU1]["node_config"]["SecurityGroupIds"]
    _only(check(config), GPU1, "SecurityGroupIds", "0.0.0.0/0")


def test_ray_version_mismatch_is_a_violation(config, check):
    """The Ray pinned for the nodes must equal the Ray installed here."""
    config["setup_commands"] = _replace_in(config["setup_commands"], ray.__version__, "2.59.0")
    _only(check(config), "ray 2.59.0", f"ray {ray.__version__} is installed here")


def test_unpinned_ray_is_a_violation(config, check):
    """`pip install ray[...]` without an exact version may install a different Ray."""
    config["setup_commands"] = _replace_in(config["setup_commands"], f"=={ray.__version__}", "")
    _only(check(config), "without an exact version")


def test_omitted_start_commands_bring_rays_unsafe_aws_defaults(config, check):
    """Rules see the config as `ray up` will run it: without our start commands Ray's AWS
    defaults bind the dashboard to 0.0.0.0, leave auth off and keep usage stats on."""
    del config["head_start_ray_commands"]
    joined = "\n".join(check(config))
    assert "binds it to 0.0.0.0" in joined
    assert "RAY_AUTH_MODE=token" in joined
    assert "--disable-usage-stats" in joined
    assert "--num-cpus" not in joined  # AWS passes `resources: {CPU: 0}` on by itself


def test_head_with_cpus_is_a_violation(config, check):
    """The head must advertise CPU 0 so trials never land next to the driver."""
    config["available_node_types"][HEAD]["resources"] = {}
    _only(check(config), HEAD, "CPU: 0", "missing")


def test_spot_head_is_a_violation(config, check):
    """The head is on-demand: losing it loses the sweep driver."""
    config["available_node_types"][HEAD]["node_config"]["InstanceMarketOptions"] = {
        "MarketType": "spot"
    }
    _only(check(config), HEAD, "must not be spot")


def test_worker_without_instance_profile_is_a_violation(config, check):
    """GPU workers need an IAM instance profile to write results to S3."""
    del config["available_node_types"][GPU4]["node_config"]["IamInstanceProfile"]
    _only(check(config), GPU4, "IamInstanceProfile", "S3")


def test_token_not_shipped_or_shipped_from_the_repo_is_a_violation(config, check):
    """Every node gets the token via file_mounts, and never from a path inside the repo."""
    config["file_mounts"]["~/.ray/auth_token"] = "secrets/auth_token"
    _only(check(config), "relative path", "never commit")
    del config["file_mounts"]["~/.ray/auth_token"]
    _only(check(config), "no entry ships ~/.ray/auth_token")


def test_usage_stats_left_on_is_a_violation(config, check):
    """The head must start with --disable-usage-stats."""
    config["head_start_ray_commands"] = _replace_in(
        config["head_start_ray_commands"], " --disable-usage-stats", ""
    )
    _only(check(config), "--disable-usage-stats")


def test_stale_package_version_is_a_violation(config, check):
    """The package installed on the nodes is the version installed here."""
    config["setup_commands"] = _replace_in(
        config["setup_commands"], "imbalance-study-0.1.0", "imbalance-study-0.0.9"
    )
    _only(check(config), "imbalance-study version 0.0.9")


def test_cached_stopped_nodes_is_a_violation(config, check):
    """Nodes are terminated on scale-down: stopped GPU nodes keep billing their disks."""
    del config["provider"]["cache_stopped_nodes"]
    _only(check(config), "cache_stopped_nodes")


def test_local_provider_needs_num_cpus_zero_on_the_head(shipped, check):
    """On-prem (`local` provider) Ray does not pass `resources` to `ray start`, so only
    --num-cpus=0 keeps trials off the head; AWS-only rules do not apply there."""
    local = {
        "cluster_name": "imbalance-study-onprem",
        "provider": {"type": "local", "head_ip": "10.0.0.1", "worker_ips": ["10.0.0.2"]},
        "auth": {"ssh_user": "ubuntu", "ssh_private_key": "~/.ssh/id_ed25519"},
        **{
            k: copy.deepcopy(shipped[k])
            for k in (
                "file_mounts",
                "setup_commands",
                "head_setup_commands",
                "head_start_ray_commands",
                "worker_start_ray_commands",
            )
        },
    }
    assert check(local) == []
    local["head_start_ray_commands"] = _replace_in(
        local["head_start_ray_commands"], " --num-cpus=0", ""
    )
    _only(check(local), "local provider", "--num-cpus=0")


# --- bypasses: the effective configuration is judged, not its text ------------------------


def _ingress(port: int | None, *cidrs: str) -> dict:
    """One IpPermissions item: TCP ``port``, or every protocol for None, from ``cidrs``."""
    rule: dict = {"IpProtocol": "-1"}
    if port is not None:
        rule = {"IpProtocol": "tcp", "FromPort": port, "ToPort": port}
    v4 = [{"CidrIp": c} for c in cidrs if ":" not in c]
    v6 = [{"CidrIpv6": c} for c in cidrs if ":" in c]
    return {**rule, **({"IpRanges": v4} if v4 else {}), **({"Ipv6Ranges": v6} if v6 else {})}


@pytest.mark.parametrize(
    ("permissions", "fragments"),
    [
        (  # SSH to the world as two halves in two rules
            [_ingress(22, "0.0.0.0/1"), _ingress(22, "128.0.0.0/1")],
            [
                "IpPermissions[0] + IpPermissions[1]",
                "port 22 (SSH)",
                "0.0.0.0/1, 128.0.0.0/1",
                "together all of IPv4",
            ],
        ),
        (  # every protocol from the two IPv6 halves: every sensitive port
            [_ingress(None, "::/1", "8000::/1")],
            [
                "IpPermissions[0]",
                "port 22 (SSH)",
                "port 6379 (GCS)",
                "port 10001 (Ray Client)",
                "::/1, 8000::/1",
                "together all of IPv6",
            ],
        ),
        (  # a port range holding the GCS, from two /8s (twice the most allowed)
            [
                {
                    "IpProtocol": "tcp",
                    "FromPort": 6000,
                    "ToPort": 7000,
                    "IpRanges": [{"CidrIp": "11.0.0.0/8"}, {"CidrIp": "12.0.0.0/8"}],
                }
            ],
            [
                "port 6379 (GCS)",
                "11.0.0.0/8, 12.0.0.0/8",
                "33,554,432 addresses",
                "at most 16,777,216",
            ],
        ),
        (  # the dashboard from a /7: a large share of the internet, not all of it
            [_ingress(8265, "0.0.0.0/7")],
            ["port 8265 (dashboard / Jobs API)", "0.0.0.0/7", "33,554,432 addresses"],
        ),
        (  # any port to the whole internet, united over rules, by port number
            [
                _ingress(443, "0.0.0.0/1"),
                {
                    "IpProtocol": "6",
                    "FromPort": 400,
                    "ToPort": 500,
                    "IpRanges": [{"CidrIp": "128.0.0.0/1"}],
                },
            ],
            ["IpPermissions[0] + IpPermissions[1]", "ports 443-443/tcp", "all of IPv4"],
        ),
    ],
    ids=[
        "ssh-halves",
        "ipv6-halves-all-traffic",
        "port-range-two-slash8",
        "slash7",
        "https-halves",
    ],
)
def test_ingress_is_judged_on_the_union_of_all_rules(config, check, permissions, fragments):
    """Sources are united over every rule that opens a port (IpRanges and Ipv6Ranges, port
    ranges, all-protocol rules); a sensitive port may be reached from at most a /8's worth of
    IPv4 (a /32's of IPv6), any port from less than everyone."""
    config["provider"]["security_group"] = {"IpPermissions": permissions}
    _only(check(config), *fragments)


def test_ingress_from_a_private_slash8_or_to_other_ports_is_fine(config, check):
    """The threshold lets 10.0.0.0/8 (the largest private range) reach SSH, and a half of
    the internet reach a port that is not sensitive."""
    config["provider"]["security_group"] = {
        "IpPermissions": [_ingress(22, "10.0.0.0/8"), _ingress(443, "0.0.0.0/1")]
    }
    assert check(config) == []


_GOOD_HEAD = (
    "RAY_AUTH_MODE=token ray start --head --port=6379 --autoscaling-config="
    "~/ray_bootstrap_config.yaml --dashboard-host=127.0.0.1 --num-cpus=0 --disable-usage-stats"
)
_OPEN_HEAD = _GOOD_HEAD.replace("127.0.0.1", "0.0.0.0")
_NO_TOKEN_HEAD = _GOOD_HEAD.replace("RAY_AUTH_MODE=token ", "")
_OPEN = "binds it to 0.0.0.0"


@pytest.mark.parametrize(
    ("lines", "fragments"),
    [
        ([f"false && {_GOOD_HEAD}; command {_OPEN_HEAD}"], [_OPEN]),
        ([f"true || {_GOOD_HEAD}; nohup {_OPEN_HEAD}"], [_OPEN]),
        ([f"false && export RAY_AUTH_MODE=token; {_NO_TOKEN_HEAD}"], ["(not set)"]),
        ([f"false && {_GOOD_HEAD} # decoy\n{_NO_TOKEN_HEAD}"], ["(not set)"]),
        ([f"true#; {_OPEN_HEAD}", f"{_GOOD_HEAD} || true"], [_OPEN]),
        ([f"exec {_OPEN_HEAD}; exit 0; {_GOOD_HEAD}"], [_OPEN]),
        ([f"bash -lc '{_OPEN_HEAD}' && exit 0; {_GOOD_HEAD}"], [_OPEN]),
        ([f"tmux new -d '{_OPEN_HEAD}'; exit 0; {_GOOD_HEAD}"], ["cannot verify", "`tmux`"]),
        ([f"echo '{_OPEN_HEAD}' | bash; exit 0; {_GOOD_HEAD}"], ["cannot verify", "stdin"]),
        ([f'false && {_GOOD_HEAD}; eval "$START"'], ["cannot verify", "`eval $START`"]),
        ([f'false && {_GOOD_HEAD}; bash -c "$START"'], ["cannot verify", "`bash -c` runs"]),
        ([f"{_GOOD_HEAD} `cat ~/flags`"], ["cannot verify", "command substitution"]),
        ([f"{_GOOD_HEAD} $EXTRA"], ["cannot verify", "`$EXTRA` is only known at run time"]),
        ([f"false && {_GOOD_HEAD}; sudo {_OPEN_HEAD}"], ["cannot verify", "`sudo` runs ray"]),
        (
            [f"ray() {{ command ray start --head --dashboard-host=0.0.0.0; }}; {_GOOD_HEAD}"],
            ["cannot verify", "a shell function defined here may stand in for ray"],
        ),
        ([f"PATH=/tmp/fake:$PATH {_GOOD_HEAD}"], ["cannot verify", "PATH is changed"]),
    ],
    ids=[
        "false-and",
        "true-or",
        "export-behind-false",
        "comment-swallows-newline",
        "hash-inside-a-word",
        "exit-0",
        "bash-c",
        "string-to-tmux",
        "echo-to-bash",
        "eval",
        "bash-c-variable",
        "backticks",
        "variable-options",
        "sudo",
        "function-named-ray",
        "path",
    ],
)
def test_ray_start_is_judged_as_it_runs(config, check, lines, fragments):
    """The rules on how Ray starts judge the `ray start` that actually runs: a decoy behind
    `false &&`, `true ||`, `exit 0`, a comment or in a string does not count, a real start
    behind a wrapper, `bash -c` or a newline after a comment does, and a command the checker
    cannot follow is a violation. Each message names the list item (`[1]`: after `ray stop`)."""
    config["head_start_ray_commands"] = ["ray stop", *lines]
    violations = check(config)
    assert any(
        v.startswith("head_start_ray_commands[1]: ") and all(f in v for f in fragments)
        for v in violations
    ), violations


def test_token_auth_decoy_on_a_worker_start_is_a_violation(config, check):
    """`RAY_AUTH_MODE=token` on a start that never runs does not cover the one that does."""
    start = "ray start --address=$RAY_HEAD_IP:6379 --disable-usage-stats"
    config["worker_start_ray_commands"] = [f"false && RAY_AUTH_MODE=token {start}; {start}"]
    _only(check(config), "worker_start_ray_commands[0]", "RAY_AUTH_MODE=token (not set)")


@pytest.mark.parametrize(
    ("node_type", "options", "fragments"),
    [
        (GPU4, None, ["missing", "HttpTokens: required, HttpPutResponseHopLimit: 1"]),
        (
            HEAD,
            {"HttpTokens": "optional", "HttpPutResponseHopLimit": 1},
            ["HttpTokens: 'optional' allows IMDSv1"],
        ),
        (
            GPU1,
            {"HttpTokens": "required", "HttpPutResponseHopLimit": 2},
            ["HttpPutResponseHopLimit: 2", "bridged containers"],
        ),
        (GPU1, {"HttpTokens": "required"}, ["HttpPutResponseHopLimit: None"]),
    ],
    ids=["missing", "imdsv1", "two-hops", "hop-limit-left-to-the-ami"],
)
def test_every_node_type_requires_imds_v2(config, check, node_type, options, fragments):
    """Head and every worker type require IMDSv2 tokens with a hop limit of 1."""
    node_config = config["available_node_types"][node_type]["node_config"]
    if options is None:
        del node_config["MetadataOptions"]
    else:
        node_config["MetadataOptions"] = options
    _only(
        check(config), f"available_node_types.{node_type}.node_config.MetadataOptions", *fragments
    )


def test_token_must_come_from_outside_every_project(config, check, tmp_path, home):
    """The token file must not come from the config's directory or a git work tree, also
    through a symbolic link or a mounted directory, nor be written in the config."""
    work_tree = tmp_path.parent / f"{tmp_path.name}-clone"
    (work_tree / ".git").mkdir(parents=True)
    (work_tree / "auth_token").write_text("0" * 64)
    mounts = config["file_mounts"]

    mounts["~/.ray/auth_token"] = str(tmp_path / "secrets" / "auth_token")
    _only(check(config), "comes from", "inside the cluster config's directory")

    mounts["~/.ray/auth_token"] = str(work_tree / "auth_token")
    _only(check(config), f"inside the git work tree {work_tree}")

    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").symlink_to(work_tree / "auth_token")
    mounts["~/.ray/auth_token"] = "~/.ray/auth_token"
    _only(check(config), "'~/.ray/auth_token'", f"inside the git work tree {work_tree}")

    del mounts["~/.ray/auth_token"]
    mounts["/home/ubuntu/.ray"] = str(work_tree)  # the whole directory, token included
    _only(check(config), f"{work_tree}/auth_token", "inside the git work tree")


@pytest.mark.parametrize(
    ("key", "command", "fragments"),
    [
        (
            "head_start_ray_commands",
            f"RAY_AUTH_TOKEN={'ab' * 32} {_GOOD_HEAD}",
            ["head_start_ray_commands[1]: sets RAY_AUTH_TOKEN to a literal"],
        ),
        (
            "setup_commands",
            f"echo 'export RAY_AUTH_TOKEN=\"{'ab' * 32}\"' >> ~/.bashrc",
            ["setup_commands[4]: sets RAY_AUTH_TOKEN to a literal"],
        ),
        (
            "setup_commands",
            f"mkdir -p ~/.ray && echo {'ab' * 32} > ~/.ray/auth_token",
            ["head_setup_commands[4]", "writes the auth token on the node"],
        ),
    ],
    ids=["start-env", "bashrc", "written-by-setup"],
)
def test_inline_token_in_the_config_is_a_violation(config, check, key, command, fragments):
    """A token written in the config is a committed secret, wherever it appears."""
    if key == "head_start_ray_commands":
        config[key] = ["ray stop", command]
    else:
        config[key].append(command)
    violations = check(config)
    assert any(all(f in v for f in fragments) for v in violations), violations


# --- command line ----------------------------------------------------------------------------


def test_cli_exit_status_ok_violations_invalid(config, tmp_path, capsys):
    """`study-cluster-check` prints OK (exit 0), the violations (exit 1), or Ray's
    rejection (exit 2)."""
    assert main([str(CLUSTER_YAML)]) == 0
    assert capsys.readouterr().out.strip().endswith("OK")

    bad = tmp_path / "bad.yaml"
    config["available_node_types"][HEAD]["node_config"]["ImageId"] = "latest_dlami"
    bad.write_text(yaml.safe_dump(config))
    assert main([str(bad)]) == 1
    assert "latest_dlami" in capsys.readouterr().out

    config["head_setup_command"] = []
    bad.write_text(yaml.safe_dump(config))
    assert main([str(bad)]) == 2
    assert "head_setup_command" in capsys.readouterr().err
