"""Run the BraTS conversion from a checkout, without the console script.

From the repository root (the package installed, as the README's set-up does)::

    python -m dataset_conversion convert /data/BraTS2023-SSA -d 232 -n BraTS23SSA
    python -m dataset_conversion combine 231 232 -d 233 -n BraTS23GLISSA
    python dataset_conversion/convert.py /data/BraTS2023-SSA -d 232 -n BraTS23SSA

Each subcommand is the same as ``nnunet-transfer convert/combine/splits/to-brats``.
"""

from __future__ import annotations

import sys

SUBCOMMANDS = ("convert", "combine", "splits", "to-brats")


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in SUBCOMMANDS:
        print(__doc__.strip(), file=sys.stderr)
        print(f"\nusage: python -m dataset_conversion {{{','.join(SUBCOMMANDS)}}} ...", file=sys.stderr)
        return 0 if args[:1] in (["-h"], ["--help"]) else 2
    from nnunet_transfer.cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
