"""A trained run out into the world: ``export`` (safetensors, torchvision/timm state dicts, ONNX,
torch.export) and ``predict`` (class scores for image files).

    cli.py        the commands' options (imports no torch)
    export.py     export_run() and `bagoftricks export`
    verify.py     ONNX / torch.export files run against the PyTorch model on the same inputs
    predict.py    predict_files() and `bagoftricks predict`
    images.py     image files and folders to uint8 tensors, with the reason a file is unreadable
"""
