"""`pykvm run`: exits decoded as a kernel engineer reads them, tracepoints on request, and
exit status 1 when the guest died."""
import pytest

from pykvm.cli import main

# out 0x80, al; mov al, 5; out 0x81, al; in al, 0x82; hlt
PORTS = bytes([0xE6, 0x80, 0xB0, 0x05, 0xE6, 0x81, 0xE4, 0x82, 0xF4])
# mov rax, 0x40000000; mov dword [rax], 0x11223344; mov ebx, [rax]; hlt
MMIO = (bytes([0x48, 0xB8]) + (0x4000_0000).to_bytes(8, "little") +
        bytes([0xC7, 0x00, 0x44, 0x33, 0x22, 0x11, 0x8B, 0x18, 0xF4]))
UD2 = bytes([0x0F, 0x0B])


def _run(tmp_path, capsys, code, *argv):
    f = tmp_path / "guest.bin"
    f.write_bytes(code)
    rc = main(["run", str(f), *argv])
    return rc, capsys.readouterr().out


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_ports_with_direction_and_data(tmp_path, capsys, vendor):
    rc, out = _run(tmp_path, capsys, PORTS, "--vendor", vendor)
    assert rc == 0
    lines = out.splitlines()
    assert lines == ["exit 1: IO out port 0x80 size 1 data 0x00",
                     "exit 2: IO out port 0x81 size 1 data 0x05",
                     "exit 3: IO in port 0x82 size 1 (answered with zeros)",
                     "exit 4: HLT (the guest halted)"]


def test_mmio_write_and_read(tmp_path, capsys):
    rc, out = _run(tmp_path, capsys, MMIO)
    assert rc == 0
    assert "MMIO write 0x40000000 len 4 data 0x11223344" in out
    assert "MMIO read 0x40000000 len 4" in out and "HLT" in out


def test_an_exception_names_vector_and_rip_and_fails(tmp_path, capsys):
    rc, out = _run(tmp_path, capsys, UD2)
    assert rc == 1
    assert "#UD (6)" in out and "rip 0x" in out and "port=224" not in out


@pytest.mark.parametrize("vendor,reason", [("vmx", "IO_INSTRUCTION"), ("svm", "io")])
def test_trace_shows_tracepoints_with_named_reasons(tmp_path, capsys, vendor, reason):
    rc, out = _run(tmp_path, capsys, PORTS, "--vendor", vendor, "--trace")
    assert rc == 0
    assert f"kvm_exit: reason {reason} rip 0x" in out
    assert "kvm_userspace_exit: reason KVM_EXIT_IO (2)" in out
    assert out.index("kvm_entry") < out.index("exit 1:")


def test_stops_at_max_exits(tmp_path, capsys):
    rc, out = _run(tmp_path, capsys, bytes([0xEB, 0xFE]), "--max-exits", "2",
                   "--max-insns", "100")
    assert rc == 0 and "INTR" in out and "stopped after 2 exits" in out
