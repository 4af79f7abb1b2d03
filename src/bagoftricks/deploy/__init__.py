"""A trained run out into the world: ``export`` (safetensors, torchvision/timm state dicts, ONNX,
torch.export, a Hugging Face Hub model folder) and ``predict`` (class scores for image files).

    cli.py        the commands' options (imports no torch)
    export.py     export_run() and `bagoftricks export`
    hf.py         the model folder of --format hf (timm's Hugging Face Hub layout) and its model card
    verify.py     every exported format run against the PyTorch model on the same inputs; the tolerance rule
    predict.py    predict_files() and `bagoftricks predict`
    images.py     image files and folders to uint8 tensors, with the reason a file is unreadable
"""
