"""Helpers shared by several test modules (importable from every test folder: conftest.py puts
this folder on sys.path)."""


def fake_plugin_bytes(text: bytes) -> bytes:
    """What the Triton generator accepts as our plugin library without loading it: an ELF shared
    object header (e_type ET_DYN) and the TensorRT version tag of plugins/cornernetDeployPlugins.cpp.
    For tests where the library is copied, never loaded (the real libraries: test_plugin_compile.py)."""
    header = b"\x7fELF\x02\x01\x01" + bytes(9) + (3).to_bytes(2, "little")
    return header + b"\0cornernet_deploy_tensorrt_headers=10.3.0\0" + text
