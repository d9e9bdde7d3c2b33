"""Print, as JSON, what the CPU's `cpuid` instruction tells the libraries: vendor, AVX2/FMA/AVX-512,
data cache sizes. Run by tests/test_numeric_pin.py natively and under an emulated CPU (qemu-x86_64),
where /proc/cpuinfo and sysfs still describe the host: cpuid is what ATen (cpuinfo), oneMKL and
oneDNN (xbyak) read. x86-64 Linux only; needs no package beyond the standard library.
"""

import ctypes
import json
import mmap
import struct

# void cpuid(uint32 leaf, uint32 subleaf, uint32 out[4]) (System V AMD64 ABI): push rbx; mov eax, edi;
# mov ecx, esi; mov r8, rdx; cpuid; mov [r8], eax; mov [r8+4], ebx; mov [r8+8], ecx; mov [r8+12], edx;
# pop rbx; ret
CODE = bytes([0x53, 0x89, 0xF8, 0x89, 0xF1, 0x49, 0x89, 0xD0, 0x0F, 0xA2, 0x41, 0x89, 0x00, 0x41, 0x89, 0x58, 0x04,
              0x41, 0x89, 0x48, 0x08, 0x41, 0x89, 0x50, 0x0C, 0x5B, 0xC3])


def main() -> None:
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(CODE)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(page))
    fn = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32))(addr)

    def cpuid(leaf: int, sub: int = 0) -> tuple[int, int, int, int]:
        out = (ctypes.c_uint32 * 4)()
        fn(leaf, sub, out)
        return tuple(out)

    _, b, c, d = cpuid(0)
    vendor = struct.pack("<III", b, d, c).decode()
    _, _, ecx1, _ = cpuid(1)
    _, ebx7, _, _ = cpuid(7)
    # Deterministic cache parameters: leaf 4 on Intel, 0x8000001D on AMD (same layout).
    leaf = 4 if vendor == "GenuineIntel" else 0x8000001D
    caches = {}
    for sub in range(8):
        a, b, c, _ = cpuid(leaf, sub)
        kind = a & 0x1F  # 1 data, 2 instruction, 3 unified, 0 no more caches
        if kind == 0:
            break
        size = ((b >> 22) + 1) * (((b >> 12) & 0x3FF) + 1) * ((b & 0xFFF) + 1) * (c + 1)  # ways x parts x line x sets
        suffix = {1: "d", 2: "i"}.get(kind, "")
        caches[f"L{(a >> 5) & 7}{suffix}"] = size // 1024
    print(json.dumps({"vendor": vendor, "fma": bool(ecx1 >> 12 & 1), "avx2": bool(ebx7 >> 5 & 1),
                      "avx512f": bool(ebx7 >> 16 & 1), "caches_kib": caches}))


if __name__ == "__main__":
    main()
