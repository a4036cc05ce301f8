"""Import-path model factories with planted sequence bugs, called by recipe as
Factory(vocab_size=..., block_size=..., num_outputs=..., **model.args) (tests/stages/test_baseline_text.py)."""
from recipe.models_seq import GPT
from tests.bugs.sequence import zoo


def no_causal_mask(vocab_size, block_size, num_outputs, n_embd=16):
    """A GPT whose attention sees every position: position t reads token t+1."""
    return zoo.TinyGPT(vocab_size, block_size, n_embd=n_embd, n_head=2, n_layer=1, causal=False)


def mean_over_padding(vocab_size, block_size, num_outputs, n_embd=16):
    """A text classifier that averages every position, the pads included (it was never told the pad id)."""
    return GPT(vocab_size, block_size, num_outputs, n_layer=1, n_head=2, n_embd=n_embd, pool="mean", pad_id=None)


def no_positions(vocab_size, block_size, num_outputs, n_embd=16):
    """A GPT whose position embedding is built but never added: it reads a bag of tokens."""
    return zoo.TinyGPT(vocab_size, block_size, n_embd=n_embd, n_head=2, n_layer=1, positions=False)
