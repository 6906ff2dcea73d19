"""The hub's open points are settings with the best-supported defaults, and bad values stop start-up."""
from __future__ import annotations

import pytest

from gateway.config import ConfigError, HubChannelSettings, load_settings


def test_defaults_follow_qd_1551_pl02() -> None:
    hub = HubChannelSettings()
    assert (hub.receiver_id, hub.message_version, hub.msg_type, hub.txn_type) == ("TDLBYT", "1.0.3", "101",
                                                                                   "sync_checkup")
    assert (hub.data_shape, hub.checksum_key_order) == ("base64", "as_sent")
    assert (hub.default_doi_tuong, hub.default_nguon_kinh_phi, hub.practitioner_signers) == ("14", "9", [])


@pytest.mark.parametrize(("variable", "value", "named"), [
    ("HBGW_PORTAL__HUB__DEFAULT_DOI_TUONG", "15", "portal.hub.default_doi_tuong"),
    ("HBGW_PORTAL__HUB__DEFAULT_NGUON_KINH_PHI", "6", "portal.hub.default_nguon_kinh_phi"),
    ("HBGW_PORTAL__HUB__DATA_SHAPE", "json", "portal.hub.data_shape"),
    ("HBGW_PORTAL__HUB__PRACTITIONER_SIGNERS", '[{"licence": " ", "source": "dev"}]', "licence")])
def test_bad_hub_settings_are_refused_naming_the_setting(variable: str, value: str, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ={variable: value})
    assert named in "; ".join(caught.value.problems)


def test_practitioner_signers_come_from_the_environment_as_a_list() -> None:
    settings = load_settings(None, environ={"HBGW_PORTAL__HUB__PRACTITIONER_SIGNERS":
                                            '[{"licence": "CCHN-000222-HN", "source": "pkcs12", '
                                            '"pkcs12_file": "/etc/bs.p12"}]'})
    [doctor] = settings.portal.hub.practitioner_signers
    assert (doctor.licence, doctor.source, str(doctor.pkcs12_file)) == ("CCHN-000222-HN", "pkcs12", "/etc/bs.p12")
