import pytest

from trustseg.core.errors import UnknownNameError
from trustseg.core.registry import Registry, resolve


def make():
    reg = Registry("measure")

    @reg.register("entropy", doc="predictive entropy")
    def entropy():
        return 1

    @reg.register("mutual_information")
    def mi():
        """Mutual information.

        More text."""
        return 2

    return reg


def test_get_and_docs():
    reg = make()
    assert reg.get("entropy")() == 1
    assert reg["mutual_information"]() == 2
    assert reg.entry("entropy").doc == "predictive entropy"
    assert reg.entry("mutual_information").doc == "Mutual information."
    assert reg.names() == ["entropy", "mutual_information"]
    assert "entropy" in reg and len(reg) == 2


def test_unknown_name_suggests():
    reg = make()
    with pytest.raises(UnknownNameError, match="did you mean 'entropy'") as e:
        reg.get("entropie")
    assert "Known: entropy, mutual_information" in str(e.value)
    with pytest.raises(UnknownNameError) as e:
        reg.get("zzz")
    assert "did you mean" not in str(e.value)


def test_duplicate_registration_rejected():
    reg = make()
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("entropy", object())


def test_resolve_comma_list():
    reg = make()
    assert [e.name for e in resolve(reg, "entropy, mutual_information")] == ["entropy", "mutual_information"]
    with pytest.raises(UnknownNameError):
        resolve(reg, ["entropy", "mi2"])


def test_metadata_is_kept_and_read_only():
    reg = Registry("thing")
    reg.add("a", 1, doc="one", requires=("probs",), higher_is_better=True)

    @reg.register("b")
    def b():
        """Bee."""

    assert reg.meta("a") == {"requires": ("probs",), "higher_is_better": True}
    assert reg.entry("b").meta == {} and reg.entry("b").doc == "Bee."
    with pytest.raises(TypeError):
        reg.meta("a")["requires"] = ()  # type: ignore[index]
    with pytest.raises(UnknownNameError, match="did you mean 'a'"):
        reg.meta("aa")
