"""imgcls: train, understand and ship image classifiers.

    import imgcls
    result = imgcls.train(data={"name": "mnist"}, model="mlp", trainer={"epochs": 1})
    metrics = imgcls.evaluate(result.best)
    predictor = imgcls.Predictor.load(result.best)
    predictor.predict("digit.png")
"""

__version__ = "0.1.0"

from imgcls.errors import ImgclsError  # noqa: E402
from imgcls.evaluate import evaluate, read_metrics  # noqa: E402
from imgcls.modelfile import load_model, read_meta  # noqa: E402
from imgcls.models import create_model, list_models, register_model  # noqa: E402
from imgcls.predict import Predictor  # noqa: E402
from imgcls.train.run import TrainResult, train  # noqa: E402

__all__ = ["ImgclsError", "Predictor", "TrainResult", "create_model", "evaluate", "list_models", "load_model",
           "read_meta", "read_metrics", "register_model", "train"]
