"""cluster.yaml and its offline validator (study.cluster): Ray's own schema checks and our
safety rules, exercised on the shipped file and on mutated copies. No cloud, no network."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import ray
import yaml

from study.cluster import ClusterConfigError, main, validate_cluster_config

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


@pytest.fixture
def check(tmp_path):
    """Write a config to a file and validate it, as a user would."""

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


# --- command line ----------------------------------------------------------------------------


def test_cli_exit_status_ok_violations_invalid(config, tmp_path, capsys):
    """`python -m study.cluster` prints OK (exit 0), the violations (exit 1), or Ray's
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
