"""AttackSpec parsing, canonical keys, defaults and error messages; the registry."""

from __future__ import annotations

import math

import pytest

import attacks
from attacks import AttackSpec, AttackSpecError, expand_eps, format_eps, list_attacks, parse_eps, parse_specs


def test_a_spec_string_parses_to_what_the_constructor_builds() -> None:
    spec = AttackSpec(name="pgd", eps="8/255", steps=10)
    assert spec == AttackSpec.parse("pgd:eps=8/255,steps=10")
    assert spec.eps == 8 / 255 and spec.eps_label == "8/255"
    assert spec.alpha == pytest.approx(spec.eps / 4) and spec.alpha_label == "2/255"
    assert spec.norm == "Linf" and spec.restarts == 1 and spec.seed is None


def test_defaults_are_filled_so_equivalent_specs_share_a_key() -> None:
    a = AttackSpec.parse("pgd:eps=0.03137254901960784")
    b = AttackSpec.parse("pgd:eps=8/255,steps=10,alpha=2/255,restarts=1")
    assert a == b and a.key == b.key
    assert AttackSpec.parse("cw") == AttackSpec.parse(
        "cw:c=0.001,kappa=0,lr=0.01,binary_search_steps=9,steps=1000,eps=inf"
    )


@pytest.mark.parametrize("name", list_attacks())
def test_every_registry_name_round_trips_through_its_key(name: str) -> None:
    spec = AttackSpec.parse(name if name in ("clean", "cw", "deepfool") else f"{name}:eps=4/255")
    assert AttackSpec.parse(spec.key) == spec
    assert AttackSpec.from_dict(spec.to_dict()) == spec
    assert spec.key.split(":")[0] == name


def test_keys_are_unique_across_parameters() -> None:
    specs = [
        "pgd:eps=8/255",
        "pgd:eps=8/255,steps=20",
        "pgd:eps=8/255,alpha=1/255",
        "pgd:eps=8/255,restarts=2",
        "pgd:eps=8/255,seed=3",
        "pgd:eps=4/255",
        "apgd_ce:eps=8/255",
        "apgd_ce:eps=8/255,norm=L2",
        "cw:c=0.1",
        "cw",
        "fgsm:eps=8/255",
        "clean",
    ]
    keys = [AttackSpec.parse(s).key for s in specs]
    assert len(set(keys)) == len(keys)


def test_alpha_follows_eps_on_replace_unless_given() -> None:
    spec = AttackSpec.parse("pgd:eps=8/255")
    assert spec.replace(eps="4/255").alpha == pytest.approx(1 / 255)
    assert spec.replace(eps="4/255", alpha="2/255").alpha == pytest.approx(2 / 255)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("pgdd:eps=8/255", "allowed: clean, fgsm"),
        ("pgd", "needs eps"),
        ("pgd:eps=abc", "bad pgd eps 'abc'"),
        ("pgd:eps=-1/255", "must be >= 0"),
        ("pgd:eps=nan", "bad pgd eps 'nan'"),
        ("pgd:eps=8/255,stepz=3", "unknown parameter 'stepz'"),
        ("pgd:eps=8/255,steps=0", "steps must be an integer >= 1"),
        ("pgd:eps=8/255,steps=2.5", "steps must be an integer"),
        ("pgd:eps=8/255,steps=10,steps=20", "given twice"),
        ("pgd:eps", "is not key=value"),
        ("pgd:eps=inf", "eps must be finite"),
        ("fgsm:eps=8/255,steps=3", "fgsm has no steps"),
        ("fgsm:eps=8/255,norm=L2", "allowed: Linf"),
        ("fgsm:eps=8/255,alpha=1/255", "no step size alpha"),
        ("bim:eps=8/255,restarts=3", "deterministic"),
        ("autoattack:eps=8/255,version=plus", "allowed: standard"),
        ("autoattack:eps=8/255,steps=10", "reference iteration counts"),
        ("clean:eps=8/255", "clean has eps = 0"),
        ("cw:c=abc", "bad cw option c"),
        ("square:eps=8/255,norm=L1", "allowed: Linf, L2"),
        ("", "bad attack spec"),
    ],
)
def test_bad_specs_raise_one_clear_line(text: str, needle: str) -> None:
    with pytest.raises(AttackSpecError) as info:
        AttackSpec.parse(text)
    message = str(info.value)
    assert needle in message and "\n" not in message
    assert isinstance(info.value, ValueError)


def test_bad_option_in_constructor() -> None:
    with pytest.raises(AttackSpecError, match="unknown option 'decay'"):
        AttackSpec(name="pgd", eps=0.1, options={"decay": 1.0})


@pytest.mark.parametrize("value", [8 / 255, 0.03, 0.5, 1 / 1020, 1e-7, 2 / 3, 1.0, 0.0, math.inf])
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_eps_labels_parse_back_exactly(value: float, norm: str) -> None:
    assert parse_eps(format_eps(value, norm)) == value


def test_eps_labels_are_readable() -> None:
    assert format_eps(8 / 255, "Linf") == "8/255"
    assert format_eps(1 / 1020, "Linf") == "0.25/255"
    assert format_eps(0.5, "L2") == "0.5"
    assert format_eps(0.03, "Linf") == "0.03"


def test_expand_eps_and_parse_specs() -> None:
    sweep = expand_eps("pgd", ["1/255", "2/255"], steps=20)
    assert [s.eps_label for s in sweep] == ["1/255", "2/255"]
    assert all(s.steps == 20 and s.alpha == pytest.approx(s.eps / 4) for s in sweep)
    items = ["clean", {"name": "fgsm", "eps": ["1/255", "2/255"]}, "fgsm:eps=1/255", {"attack": "cw", "c": 0.1}]
    keys = [s.key for s in parse_specs(items)]
    assert keys == [
        "clean",
        "fgsm:eps=1/255",
        "fgsm:eps=2/255",
        "cw:eps=inf,steps=1000,binary_search_steps=9,c=0.1,kappa=0,lr=0.01",
    ]


def test_registry_lists_the_required_names() -> None:
    required = {
        "clean",
        "fgsm",
        "bim",
        "pgd",
        "pgd_l2",
        "mifgsm",
        "cw",
        "deepfool",
        "square",
        "apgd_ce",
        "apgd_t",
        "fab",
        "autoattack",
    }
    assert required <= set(attacks.list_attacks())
    assert attacks.attack_info("square").randomized and not attacks.attack_info("fgsm").randomized


def test_numeric_text_values_are_typed_before_checks() -> None:
    # "restarts=1" arrives as the text "1" from a spec string; it must mean the integer 1.
    assert AttackSpec.parse("fgsm:eps=8/255,restarts=1") == AttackSpec(name="fgsm", eps=8 / 255)
    with pytest.raises(AttackSpecError, match="restarts must be 1"):
        AttackSpec.parse("fgsm:eps=8/255,restarts=2")


def test_a_seed_that_changes_nothing_makes_no_second_key() -> None:
    assert AttackSpec.parse("pgd:eps=8/255,seed=0").key == AttackSpec.parse("pgd:eps=8/255").key
    assert AttackSpec.parse("fgsm:eps=8/255,seed=3").key == "fgsm:eps=8/255"  # deterministic attack
    assert AttackSpec.parse("pgd:eps=8/255,seed=3").key.endswith("seed=3")
    assert len(parse_specs(["pgd:eps=8/255", "pgd:eps=8/255,seed=0"])) == 1


def test_linf_eps_above_one_is_refused_in_one_line() -> None:
    with pytest.raises(AttackSpecError, match="above 1") as info:
        AttackSpec.parse("pgd:eps=8")
    assert "\n" not in str(info.value)
    assert AttackSpec.parse("pgd_l2:eps=3").eps == 3.0  # an L2 budget above 1 is fine
    assert AttackSpec.parse("pgd:eps=1").eps == 1.0


def test_attack_names_are_case_insensitive() -> None:
    spec = AttackSpec.parse("PGD:eps=8/255")
    assert spec == AttackSpec.parse("pgd:eps=8/255") and spec.name == "pgd" and spec.key.startswith("pgd:")
    assert AttackSpec.from_dict({"name": "Square", "eps": "8/255"}).name == "square"
