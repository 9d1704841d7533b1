"""Print the shell exports nnU-Net needs to find this plugin's trainers.

    eval "$(nnunet-transfer env)"            # all exports
    export nnUNet_extTrainer=$(nnunet-transfer env --trainer-path)

nnU-Net searches the folders on ``nnUNet_extTrainer`` for ``-tr`` classes that are not part
of nnunetv2. The folder printed here holds a single shim module re-exporting the trainers
of the installed package.
"""

from __future__ import annotations

import argparse
import shlex


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trainer-path", action="store_true",
                        help="print only the folder for nnUNet_extTrainer")


def run(args: argparse.Namespace) -> int:
    from nnunet_transfer import config

    if args.trainer_path:
        print(config.trainer_path())
        return 0
    print(f"export {config.EXT_TRAINER}={shlex.quote(config.ext_trainer_search_path())}")
    for name, folder in ((config.RAW, config.nnunet_raw), (config.PREPROCESSED, config.nnunet_preprocessed),
                         (config.RESULTS, config.nnunet_results)):
        value = folder(required=False)
        if value:
            print(f"export {name}={shlex.quote(str(value))}")
        else:
            print(f"# export {name}=/path/to/{name}   (not set yet: nnU-Net needs it)")
    return 0
