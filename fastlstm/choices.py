"""The settings a model is made of, each list written once: the Python API checks against
these, the command line offers them, and capi/fastlstm.h numbers them in the same order
(FASTLSTM_CELL_LSTM = 0, ...; tests/test_capi.py checks that the two agree).

Imports nothing: the command line reads it before NumPy and Numba load."""
CELLS = ("lstm", "rnn", "gru", "rnn_relu")     # rnn: tanh; rnn_relu: torch.nn.RNN(nonlinearity="relu")
CELL_NAMES = {"lstm": "LSTM", "rnn": "RNN", "gru": "GRU", "rnn_relu": "ReLU RNN"}    # as messages name them
LOSSES = ("mse", "xent")
OUTPUTS = ("last", "every")
OPTIMIZERS = ("adam", "sgd", "adamw")
DTYPES = ("float32", "float64")
ON_NONFINITE = ("raise", "skip")
SCHEDULES = ("constant", "cosine", "plateau")
DATA_KINDS = ("text", "series", "arrays")
SEPARATORS = {"tab": "\t"}          # a CSV's cell separator by the name a command line can type
SEPARATOR_NAMES = {c: name for name, c in SEPARATORS.items()}      # and that name, to say it as typed
DECIMALS = (".", ",")                # a CSV's decimal mark
# Other libraries' names for a setting, said back with fastlstm's (a hint in the error, not an alias)
FOREIGN_NAMES = {"mean_squared_error": "mse", "mseloss": "mse",
                 "categorical_crossentropy": "xent", "sparse_categorical_crossentropy": "xent",
                 "crossentropy": "xent", "cross_entropy": "xent", "crossentropyloss": "xent",
                 "all": "every", "sequence": "every", "simplernn": "rnn"}
