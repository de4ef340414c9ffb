"""Train a small model on MNIST, then use it from Python. Run: IMGCLS_DATA=DIR python examples/predict_demo.py"""

import numpy as np

import imgcls

result = imgcls.train(data="mnist", model="mlp", aug={"flip": False, "crop_pad": 0}, trainer={"epochs": 1})
print("test top-1:", result.metrics["top1"])

predictor = imgcls.Predictor.load(result.best)  # classes and preprocessing come from the model file
blank = np.zeros((28, 28), dtype=np.uint8)  # any path, folder, PIL image, array or tensor works
print(predictor.predict(blank, top_k=3))  # {"label", "score", "index", "top_k": [{"label", "score"}, ...]}

metrics = imgcls.evaluate(result.best)  # writes metrics.json and confusion_matrix.png
print("macro F1:", metrics["macro"]["f1"], "written to", metrics["out_dir"])
