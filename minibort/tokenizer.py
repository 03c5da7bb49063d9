# Placeholder: the tokenizer is being written (issue 4).
class Tokenizer:
    pass


def train_bpe(*args, **kwargs):
    raise NotImplementedError
