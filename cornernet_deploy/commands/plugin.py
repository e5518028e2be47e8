"""``cornernet-deploy plugin``: build (and locate) the TensorRT corner-pool plugin library.

    cornernet-deploy plugin build [--tensorrt-root DIR] [--cuda-arch LIST] [--build-dir DIR] [--output DIR]
    cornernet-deploy plugin path [--tensorrt-major N]   # the library the builder/runtime will load

One library per TensorRT major version (the headers decide which): build/lib/tensorrt-<major>/.
"""
from __future__ import annotations

import argparse
import os

from ..errors import UserError

def add_arguments(parser: argparse.ArgumentParser) -> None:
    verbs = parser.add_subparsers(dest="plugin_verb", metavar="VERB")
    build = verbs.add_parser(
        "build", help="compile libcornernet_deploy_plugins.so with CMake",
        description="Compile the CornerPool TensorRT plugin (needs nvcc, cmake and the TensorRT headers; "
                    "no GPU and no TensorRT library).")
    build.add_argument("--tensorrt-root", metavar="DIR",
                       help="TensorRT install (DIR/include holds NvInferRuntime.h); default: $TENSORRT_INCLUDE_DIR, "
                            "$TENSORRT_ROOT, then system locations")
    build.add_argument("--cuda-arch", metavar="LIST",
                       help="GPU architectures, e.g. 87 (Jetson Orin), 75,80,86,89,90, native; "
                            "default: 75,80,86,87,89 SASS + 90 SASS/PTX")
    build.add_argument("--build-dir", metavar="DIR",
                       help="CMake build directory (default: build/plugins/tensorrt-MAJOR)")
    build.add_argument("--output", metavar="DIR",
                       help="where to put the library (default: build/lib/tensorrt-MAJOR, MAJOR of the headers)")
    build.add_argument("--jobs", "-j", type=int, metavar="N", help="parallel compile jobs (default: up to 4)")
    build.add_argument("--static-registration", action="store_true",
                       help="also register the creator at load time (for trtexec --staticPlugins); links libnvinfer")
    path = verbs.add_parser("path", help="print the plugin library the engine builder and runtime will load",
                            description="Print the library for a TensorRT major ($CORNERNET_DEPLOY_PLUGIN or "
                                        "the default build output): that of --tensorrt-major, else of the "
                                        "importable tensorrt; without either, every library built, one per line.")
    path.add_argument("--tensorrt-major", type=int, metavar="N", help="e.g. 10 or 11")
    parser.set_defaults(_plugin_parser=parser)


def run(args) -> int:
    from ..runtime import plugin_library  # noqa: PLC0415 - imports neither TensorRT nor torch
    from ..tensorrt import plugin_build  # noqa: PLC0415 - neither

    if args.plugin_verb == "build":
        if args.jobs is not None and args.jobs < 1:
            raise UserError("--jobs must be at least 1")
        if args.cuda_arch is not None:
            plugin_build.normalize_cuda_archs(args.cuda_arch)  # reject typos before a long configure
        plugin_build.build_plugin(tensorrt_root=args.tensorrt_root, cuda_archs=args.cuda_arch,
                                  build_dir=args.build_dir, output_dir=args.output, jobs=args.jobs,
                                  static_registration=args.static_registration)
        return 0
    if args.plugin_verb == "path":
        major = args.tensorrt_major
        if major is None:
            installed = plugin_library.importable_tensorrt_version()
            major = int(installed.split(".")[0]) if installed else None
        if major is None and not os.environ.get(plugin_library.PLUGIN_ENV):
            libraries = plugin_library.built_plugin_libraries()
            if not libraries:
                plugin_library.find_plugin_library()  # raises the "not found, build it" error
            for library in libraries:
                print(library)
            return 0
        print(plugin_library.find_plugin_library(tensorrt_major=major))
        return 0
    args._plugin_parser.print_help()
    return 2
