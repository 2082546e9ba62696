"""Test kit for caja and provider plugins: fixtures (pytest11), a scriptable FakeProvider and the
ProviderConformance base class."""
