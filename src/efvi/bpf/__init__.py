"""BPF support (support layer: imports nothing above :mod:`efvi.errors`).

* :mod:`efvi.bpf.cbpf` — classic BPF (socket filters): encodings, a label assembler,
  the kernel's checks, an interpreter and ``tcpdump -dd`` disassembly.
* :mod:`efvi.bpf.ebpf` — a small eBPF assembler with symbolic labels and maps.
* :mod:`efvi.bpf.syscall` — ``bpf(2)`` through ctypes: maps, program load, bpf_link,
  test runs, BTF look-ups.
* :mod:`efvi.bpf.libpcap` — tcpdump expressions → classic BPF, compiled by the
  system's libpcap (``pcap_compile`` on a dead handle, through ctypes).
* :mod:`efvi.bpf.translate` — classic BPF → verifier-safe eBPF, for running a
  tcpdump filter inside the XDP program.
* :mod:`efvi.bpf.vector` — classic BPF evaluated over a whole batch with numpy (the
  sim adapter's bpf filters).

Sans-I/O except :mod:`~efvi.bpf.syscall`; shared by the adapters (``packet`` attaches
classic programs, ``xdp`` loads eBPF ones) and by tools that compile or translate
filters, so none of them imports another adapter for it.
"""
