"""Phone normalization (docs/ingest.md, Phones)."""

import pytest

from funnel_ingest.ingest.providers.phones import from_crm_field, from_free_text, from_provider_id


@pytest.mark.parametrize("typed", [
    "081234567890", "0812-3456-7890", "0812 3456 7890", "(0812) 3456-7890",
    "+62 812-3456-7890", "+62 (0)812 3456 7890", "62-0812-3456-7890", "6281234567890",
    "０８１２３４５６７８９０"])
def test_typed_indonesian_mobiles_become_e164(typed):
    assert from_free_text(typed) == "+6281234567890"


@pytest.mark.parametrize("typed", ["628123", "081234567", "+628123456789012", "halo", ""])
def test_invalid_typed_numbers_are_rejected(typed):
    assert from_free_text(typed) is None


def test_singapore_provider_id_is_not_turned_into_an_indonesian_number():
    assert from_provider_id("6560123456") == "+6560123456"
    assert from_free_text("6560123456") == "+626560123456"  # the trap a default region sets


def test_malaysian_provider_id_keeps_its_country():
    assert from_provider_id("60123456789") == "+60123456789"


@pytest.mark.parametrize("value", ["6281234567890", "+6281234567890", "+62 812 3456 7890"])
def test_provider_ids_are_international(value):
    assert from_provider_id(value) == "+6281234567890"


@pytest.mark.parametrize("value", [None, "", "12", "wamid.abc", "9" * 80])
def test_unusable_provider_ids_give_none(value):
    assert from_provider_id(value) is None


def test_crm_field_reads_trunk_zero_as_indonesian_and_bare_digits_as_international():
    assert from_crm_field("081234567890") == "+6281234567890"
    assert from_crm_field("6560123456") == "+6560123456"
    assert from_crm_field("0062 812 3456 7890") == "+6281234567890"
