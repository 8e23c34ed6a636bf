# SPDX-License-Identifier: BSD-2-Clause
"""vac.conf semantics: file order, defaults, aliases, validation with located errors."""
from __future__ import annotations

import pytest

from vac.config import load
from vac.errors import ConfigError
from vac.host.facts import HostFacts

SETTINGS = """
[settings]
vac_space = vac01.example.com
factory_name = f1.example.com
"""


def problems(excinfo):
    return [str(p) for p in excinfo.value.problems]


def test_files_merge_in_order_later_wins(tmp_path, host):
    d = tmp_path / "vac.d"
    d.mkdir()
    (d / "20-b.conf").write_text("[settings]\nmb_per_processor = 3000\n")
    (d / "10-a.conf").write_text(SETTINGS + "mb_per_processor = 1000\nhs06_per_processor = 10\n")
    (d / "30-c.txt").write_text("[settings]\nmb_per_processor = 9999\n")
    main = tmp_path / "vac.conf"
    main.write_text("[settings]\nhs06_per_processor = 12.5\n")
    run = tmp_path / "run-vac.conf"
    run.write_text("[settings]\nshutdown_time = 1800000000\n")
    files = load.config_files(etc_dir=str(d), files=(str(main), str(run),
                                                       str(tmp_path / "absent.conf")))
    assert files == [str(d / "10-a.conf"), str(d / "20-b.conf"), str(main), str(run)]
    conf = load.build(load.read_raw(files), host)
    assert conf.settings.mb_per_processor == 3000
    assert conf.settings.hs06_per_processor == 12.5
    assert conf.settings.shutdown_time == 1800000000
    assert conf.settings.origins["mb_per_processor"].startswith(str(d / "20-b.conf"))


def test_explicit_config_files_override_standard_ones(tmp_path):
    assert load.config_files(["/x/a.conf", "/x/b.conf"]) == ["/x/a.conf", "/x/b.conf"]


def test_defaults(make_config):
    conf = make_config(SETTINGS + "[machinetype m]\nmachine_model = docker\n"
                                  "root_image = docker://x\n")
    s = conf.settings
    assert s.mb_per_processor == 2048
    assert s.overload_per_processor == 1.5
    assert s.total_processors == 4 and s.host_processors == 4
    assert s.processors_per_superslot == 1
    assert s.udp_timeout_seconds == 10.0
    assert s.draining is False and s.fix_networking is True
    assert s.cycle_seconds == 60 and s.vacquery_port == 995
    mt = conf.machinetypes["m"]
    assert (mt.fizzle_seconds, mt.backoff_seconds, mt.max_wallclock_seconds) == (600, 10, 86400)
    assert mt.min_wallclock_seconds == 86400
    assert (mt.min_processors, mt.max_processors) == (1, 1)
    assert mt.heartbeat_seconds == 0 and mt.machines_dir_days == 3.0
    assert mt.container_command == "/user_data"
    assert (mt.root_device, mt.scratch_device) == ("vda", "vdb")
    assert mt.target_share == 0.0
    assert mt.machinegroup == "m"


def test_default_machine_model_is_cernvm3(make_config):
    assert make_config(SETTINGS + "[machinetype m]\ntarget_share = 1\n"
                       ).machinetypes["m"].machine_model == "cernvm3"


def test_missing_settings_section_is_an_error(make_config):
    with pytest.raises(ConfigError) as e:
        make_config("[machinetype m]\ntarget_share = 1\n")
    assert "no [settings]" in str(e.value)


def test_missing_vac_space_names_file_section_option(make_config, tmp_path):
    with pytest.raises(ConfigError) as e:
        make_config("[settings]\nfactory_name = f1.example.com\n")
    assert problems(e)[0].startswith(str(tmp_path / "vac.conf") + ":[settings]:vac_space")


def test_host_name_without_dot_needs_factory_name(make_config):
    short = HostFacts(fqdn="vm", processors=2)
    with pytest.raises(ConfigError) as e:
        make_config("[settings]\nvac_space = vac01.example.com\n", host_facts=short)
    assert "factory_name" in str(e.value) and "fully qualified" in str(e.value)
    conf = make_config("[settings]\nvac_space = s.example.com\nfactory_name = vm.example.com\n",
                       host_facts=short)
    assert conf.settings.factory_name == "vm.example.com"


def test_host_fqdn_is_the_default_factory_name(make_config):
    conf = make_config("[settings]\nvac_space = vac01.example.com\n")
    assert conf.settings.factory_name == "f1.example.com"


def test_total_processors_above_counted_is_an_error(make_config):
    with pytest.raises(ConfigError) as e:
        make_config(SETTINGS + "total_processors = 5\n")
    assert ":total_processors:" in problems(e)[0]
    assert make_config(SETTINGS + "total_processors = 3\n").settings.total_processors == 3


def test_host_processors_override(make_config):
    conf = make_config(SETTINGS + "host_processors = 32\n")
    assert conf.settings.host_processors == 32 and conf.settings.total_processors == 32


@pytest.mark.parametrize("value,expected", [
    ("yes", True), ("YES", True), ("true", True), ("On", True), ("1", True),
    ("no", False), ("False", False), ("off", False), ("0", False)])
@pytest.mark.parametrize("option", ["draining", "fix_networking", "enable_fake_backend"])
def test_booleans_mean_what_they_say(make_config, option, value, expected):
    """The original's quirks (only yes meant yes, anything but false meant true) are gone."""
    assert getattr(make_config(SETTINGS + f"{option} = {value}\n").settings,
                   option) is expected


@pytest.mark.parametrize("value", ["maybe", "y", "2", "enabled"])
def test_a_word_that_is_not_a_boolean_is_an_error_with_its_line(make_config, tmp_path, value):
    with pytest.raises(ConfigError) as e:
        make_config(SETTINGS + f"draining = {value}\n")
    assert problems(e) == [f"{tmp_path / 'vac.conf'}:[settings]:draining: {value!r} is not a "
                           "boolean (yes/no, true/false, on/off or 1/0)"]
    assert e.value.problems[0].line == 6


def test_a_value_the_original_read_the_other_way_is_said_once(make_config):
    conf = make_config(SETTINGS + "draining = true\nfix_networking = no\n"
                       "[machinetype m]\nuser_data_proxy = yes\n")
    said = [w for w in conf.warnings if "now means" in w]
    assert len(said) == 3
    assert any("draining = true now means yes; the original Vac read it as no (only yes "
               "meant yes)" in w for w in said)
    assert any("fix_networking = no now means no; the original Vac read it as yes (anything "
               "but false meant yes)" in w for w in said)
    quiet = make_config(SETTINGS + "draining = yes\nfix_networking = false\n")
    assert not [w for w in quiet.warnings if "now means" in w]


def test_bad_vacmon_hostport(make_config):
    with pytest.raises(ConfigError) as e:
        make_config(SETTINGS + "vacmon_hostport = vacmon.example.com:8884 bad_host\n")
    assert "'bad_host' is not host:port" in str(e.value)
    ok = make_config(SETTINGS + "vacmon_hostport = VacMon.Example.com:8884\n")
    assert ok.settings.vacmon_hostport == ("vacmon.example.com:8884",)


@pytest.mark.parametrize("name", ["b_ad", "b.ad", "b/ad"])
def test_machinetype_name_charset(make_config, name):
    with pytest.raises(ConfigError) as e:
        make_config(SETTINGS + f"[machinetype {name}]\ntarget_share = 1\n")
    assert f"machinetype name {name!r}" in str(e.value)


def test_machinetype_names_are_lowercased(make_config):
    assert list(make_config(SETTINGS + "[machinetype Big]\n").machinetypes) == ["big"]


def test_section_type_word_is_case_insensitive(make_config):
    conf = make_config(SETTINGS + "[MachineType abc]\ntarget_share = 1\n")
    assert "abc" in conf.machinetypes


def test_unknown_machine_model(make_config):
    with pytest.raises(ConfigError) as e:
        make_config(SETTINGS + "[machinetype m]\nmachine_model = xen\n")
    assert ":7 [machinetype m] machine_model: unknown machine_model 'xen'" in str(e.value)


def test_docker_image_needs_docker_model(make_config):
    with pytest.raises(ConfigError) as e:
        make_config(SETTINGS + "[machinetype m]\nroot_image = docker://busybox\n")
    assert "machine_model = docker" in str(e.value)


def test_max_processors_below_min(make_config):
    with pytest.raises(ConfigError) as e:
        make_config(SETTINGS + "[machinetype m]\nmin_processors = 4\nmax_processors = 2\n")
    assert ":8 [machinetype m] max_processors: " in str(e.value)   # FILE:LINE, as located


def test_settings_user_data_options_apply_unless_overridden(make_config):
    conf = make_config(SETTINGS + "user_data_option_queue = default\nuser_data_file_key = k\n"
                       "[machinetype a]\n[machinetype b]\nuser_data_option_queue = special\n")
    assert conf.machinetypes["a"].user_data_options == {"queue": "default"}
    assert conf.machinetypes["b"].user_data_options == {"queue": "special"}
    assert conf.machinetypes["a"].user_data_files == {"key": "k"}


@pytest.mark.parametrize("option", ["user_data_option_b!d", "user_data_file_a-b",
                                    "machinefeatures_option_x.y"])
def test_family_option_names_charset(make_config, option):
    with pytest.raises(ConfigError) as e:
        make_config(SETTINGS + f"{option} = v\n")
    assert option.lower() in str(e.value)


def test_machinefeatures_options(make_config):
    conf = make_config(SETTINGS + "machinefeatures_option_foo = bar\n")
    assert conf.settings.machinefeatures_options == {"foo": "bar"}


@pytest.mark.parametrize("alias,option,value", [
    ("cpu_total", "total_processors", 2), ("mb_per_cpu", "mb_per_processor", 1000),
    ("hs06_per_cpu", "hs06_per_processor", 9.5), ("overload_per_cpu", "overload_per_processor",
                                                  2.0),
    ("cpu_per_machine", "processors_per_superslot", 2),
    ("disk_gb_per_cpu", "disk_gb_per_processor", 20), ("scratch_gb", "disk_gb_per_processor", 30),
])
def test_deprecated_settings_aliases_work_with_warning(make_config, alias, option, value):
    conf = make_config(SETTINGS + f"{alias} = {value}\n")
    assert getattr(conf.settings, option) == value
    assert any(alias in w and "deprecated" in w for w in conf.warnings)


def test_new_name_beats_alias(make_config):
    conf = make_config(SETTINGS + "mb_per_cpu = 1000\nmb_per_processor = 3000\n")
    assert conf.settings.mb_per_processor == 3000


def test_deprecated_machinetype_aliases_and_vmtype(make_config):
    conf = make_config(SETTINGS + "[vmtype old]\nvm_model = vm-raw\nmachineoutputs_days = 7\n")
    mt = conf.machinetypes["old"]
    assert mt.machine_model == "vm-raw" and mt.machines_dir_days == 7.0
    assert any("[vmtype old]" in w for w in conf.warnings)
    assert any("vm_model" in w for w in conf.warnings)


def test_volume_group_must_exist(make_config):
    with pytest.raises(ConfigError) as e:
        make_config(SETTINGS + "volume_group = nosuchvg\n")
    assert "nosuchvg" in str(e.value)
    assert make_config(SETTINGS + "volume_group = vac_volume_group\n"
                       ).settings.volume_group == "vac_volume_group"


@pytest.mark.parametrize("user,message", [("nobody_here", "does not exist"), ("root", "root")])
def test_singularity_user_must_exist_and_not_be_root(make_config, user, message):
    with pytest.raises(ConfigError) as e:
        make_config(SETTINGS + f"singularity_user = {user}\n")
    assert message in str(e.value)
    assert make_config(SETTINGS + "singularity_user = vacsngly\n"
                       ).settings.singularity_user == "vacsngly"


def test_singularity_model_needs_user(make_config):
    with pytest.raises(ConfigError) as e:
        make_config(SETTINGS + "[machinetype s]\nmachine_model = singularity\n")
    assert "singularity_user" in str(e.value)


def test_bad_number_names_file_section_option(make_config, tmp_path):
    with pytest.raises(ConfigError) as e:
        make_config(SETTINGS + "[machinetype m]\nfizzle_seconds = soon\n")
    assert problems(e) == [f"{tmp_path / 'vac.conf'}:[machinetype m]:fizzle_seconds: "
                           "'soon' is not a valid integer"]
    assert e.value.problems[0].line == 7


def test_bad_shutdown_time(make_config):
    with pytest.raises(ConfigError) as e:
        make_config(SETTINGS + "shutdown_time = tomorrow\n")
    assert ":6 [settings] shutdown_time: " in str(e.value)


def test_all_problems_reported_at_once(make_config):
    with pytest.raises(ConfigError) as e:
        make_config(SETTINGS + "total_processors = 99\n[machinetype b_ad]\n"
                    "[machinetype ok]\nmachine_model = nope\n")
    assert len(e.value.problems) == 3


def test_bad_root_device_skips_machinetype_only(make_config):
    conf = make_config(SETTINGS + "[machinetype a]\nroot_device = sd-a\n[machinetype b]\n")
    assert list(conf.machinetypes) == ["b"]
    assert any("root_device" in w for w in conf.warnings)


def test_legacy_sections_are_errors(make_config):
    with pytest.raises(ConfigError) as e:
        make_config(SETTINGS + "[factories]\nnames = a b\n[targetshares]\nx = 1\n")
    assert "[factories]" in str(e.value) and "[targetshares]" in str(e.value)


def test_version_logger_legacy_words(make_config):
    conf = make_config(SETTINGS + "version_logger = false\n")
    assert conf.settings.version_logger == 0
    assert make_config(SETTINGS + "version_logger = 3\n").settings.version_logger == 3
    assert make_config(SETTINGS + "version_logger = many\n").settings.version_logger == 0


def test_unparsable_file_names_the_file(tmp_path, host):
    bad = tmp_path / "bad.conf"
    bad.write_text("no section header here\n")
    with pytest.raises(ConfigError) as e:
        load.read_raw([str(bad)])
    assert str(bad) in str(e.value)


def test_factories_are_lowercased(make_config):
    conf = make_config(SETTINGS + "factories = F1.Example.com f2\n")
    assert conf.settings.factories == ("f1.example.com", "f2")


def test_machinegroup_defaults_to_fqan(make_config):
    conf = make_config(SETTINGS + "[machinetype m]\naccounting_fqan = /lhcb/Role=NULL\n")
    assert conf.machinetypes["m"].machinegroup == "/lhcb/Role=NULL"


def test_origins_say_where_values_came_from(make_config, tmp_path):
    conf = make_config(SETTINGS + "[machinetype m]\nfizzle_seconds = 60\n")
    mt = conf.machinetypes["m"]
    assert mt.origins["fizzle_seconds"] == f"{tmp_path / 'vac.conf'} [machinetype m]"
    assert mt.origins["backoff_seconds"] == "default"


def test_fake_model_needs_enable_flag(make_config):
    with pytest.raises(ConfigError):
        make_config(SETTINGS + "[machinetype m]\nmachine_model = fake\n")
    conf = make_config(SETTINGS + "enable_fake_backend = true\n[machinetype m]\n"
                       "machine_model = fake\n")
    assert conf.machinetypes["m"].machine_model == "fake"
