"""Ads' typed config carries promoted profiles' settings (ADSMON_ADS_PROMOTED_*)."""

from __future__ import annotations

import pytest

from services.ads.config import AdsConfig
from services.ads.promoted_config import derived_token_key
from services.kit.config import ConfigError

SECRET = "s" * 32


def test_promoted_settings_are_read_through_ads_config() -> None:
    config = AdsConfig.from_env({"ADSMON_TRANSPORT": "plaintext",
                                 "ADSMON_AUTH_SECRET": SECRET, "ADSMON_ADS_PROMOTED_FREQUENCY_CAP": "5",
                                 "ADSMON_ADS_PROMOTED_RESERVE_CONNECTS": "2", "ADSMON_ADS_PROMOTED_PACING": "false",
                                 "ADSMON_ADS_PROMOTED_THREADS": "4"})
    assert (config.promoted.frequency_cap, config.promoted.reserve_connects, config.promoted.pacing) == (5, 2, False)
    assert config.promoted_threads == 4


def test_the_placement_token_key_is_derived_from_the_auth_secret_unless_configured() -> None:
    derived = AdsConfig.from_env({"ADSMON_TRANSPORT": "plaintext", "ADSMON_AUTH_SECRET": SECRET}).promoted.token_key
    assert derived == derived_token_key(SECRET.encode()) and derived != SECRET.encode()
    own = AdsConfig.from_env({"ADSMON_TRANSPORT": "plaintext",
                              "ADSMON_AUTH_SECRET": SECRET, "ADSMON_ADS_PROMOTED_TOKEN_KEY": "k" * 32})
    assert own.promoted.token_key == b"k" * 32
    assert "k" * 32 not in repr(own.promoted)


def test_a_bad_promoted_setting_fails_naming_it() -> None:
    with pytest.raises(ConfigError, match="ADSMON_ADS_PROMOTED_FREQUENCY_CAP"):
        AdsConfig.from_env({"ADSMON_TRANSPORT": "plaintext",
                            "ADSMON_AUTH_SECRET": SECRET, "ADSMON_ADS_PROMOTED_FREQUENCY_CAP": "0"})
