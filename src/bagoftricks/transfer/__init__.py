"""§6 transfer: a trained classifier's backbone under torchvision's Faster R-CNN (with an FPN) or FCN.

    scenes.py    the embedded Fashion-MNIST scenes dataset (boxes and label maps)
    targets.py   the in-memory split every reader returns (SceneSplit) and the IGNORE label
    data.py      the recipe's split, batches and the detection/segmentation augmentation (transforms.v2)
    backbone.py  the classifier's stage features with frozen BN / trainable layers
    heads.py     Faster R-CNN + FPN (anchor and RoI sizes from the strides) and FCN on those features
    metrics.py   mAP (torchmetrics, pycocotools backend), mIoU and pixel accuracy
    loop.py      run_transfer(): the run folder, checkpoints, signals and resume of `bagoftricks train`
    draw.py      boxes and label maps drawn onto PNGs
    cli.py       `bagoftricks transfer`
"""
