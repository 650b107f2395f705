"""Write the built-in demo datasets in the real Pascal VOC / CUB-200-2011 /
CIFAR-10 layouts.

Examples:
    python tools/make_demo_data.py voc --out data/voc_demo
    python tools/make_demo_data.py cub --out data/cub_demo
    python tools/make_demo_data.py cifar --out data/cifar_demo
"""
import argparse

from epsd_mm.datasets.demo_cifar import write_cifar_demo
from epsd_mm.datasets.demo_cub import write_cub_demo
from epsd_mm.datasets.demo_voc import write_voc_demo


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest='layout', required=True)
    voc = sub.add_parser('voc', help='Pascal VOC 2012 + aug layout (mmseg)')
    voc.add_argument('--out', default='data/voc_demo')
    voc.add_argument('--num-train', type=int, default=64)
    voc.add_argument('--num-val', type=int, default=16)
    voc.add_argument('--image-size', type=int, default=128)
    voc.add_argument('--seed', type=int, default=0)
    cub = sub.add_parser('cub', help='CUB-200-2011 layout')
    cub.add_argument('--out', default='data/cub_demo')
    cub.add_argument('--num-classes', type=int, default=4)
    cub.add_argument('--images-per-class', type=int, default=40)
    cub.add_argument('--image-size', type=int, default=96)
    cub.add_argument('--seed', type=int, default=0)
    cifar = sub.add_parser(
        'cifar', help='CIFAR-10 python layout (mmpretrain), shape classes')
    cifar.add_argument('--out', default='data/cifar_demo')
    cifar.add_argument('--num-train', type=int, default=5000)
    cifar.add_argument('--num-test', type=int, default=1000)
    cifar.add_argument('--seed', type=int, default=0)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.layout == 'voc':
        path = write_voc_demo(args.out, args.num_train, args.num_val,
                              args.image_size, args.seed)
    elif args.layout == 'cifar':
        path = write_cifar_demo(args.out, args.num_train, args.num_test,
                                args.seed)
    else:
        write_cub_demo(
            args.out,
            num_classes=args.num_classes,
            images_per_class=args.images_per_class,
            image_size=args.image_size,
            seed=args.seed)
        path = args.out
    print(f'wrote the {args.layout} demo dataset to {path}')


if __name__ == '__main__':
    main()
