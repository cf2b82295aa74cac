"""Sans-I/O wire codecs: pure functions over bytes, ints and nanoseconds.

Nothing in this package opens a socket or reads a clock. Header layouts are
precompiled :class:`struct.Struct` objects applied to :class:`memoryview` slices
(dpkt's "headers as data", without its metaclass). One module per concern:

* :mod:`efvi.wire.classify` — batch (numpy) and scalar frame classification.
* :mod:`efvi.wire.constants` — ethertypes, IP protocol numbers.
"""
