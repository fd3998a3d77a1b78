"""Which recurrent cell a model runs (model.cell, the LSTM's variants), behind one layer interface.

    cell = Cell("gru")                      # or Cell("lstm", peepholes=True, coupled_gates=True)
    cell = of_params(params)                # read back from the parameter names and shapes
    hs, (h_T, c_T), cache = cell.forward(xproj, cell.layer(params, k), h0, c0)
    dxproj, grads, dh0, dc0 = cell.backward(dhs, cache)    # grads: short name -> gradient

    cell                            kernels            gates (G columns)
    lstm                            lstm.py            i, f, g, o (4H)
    lstm, peepholes                 lstm_variants.py   i, f, g, o (4H); + weight_ci, _cf, _co (H,)
    lstm, coupled gates (+ peep.)   lstm_variants.py   f, g, o (3H); (+ weight_cf, _co (H,))
    gru                             gru.py             r, z, n (3H)
    rnn                             rnn.py             tanh (H)

Names, shapes and gate order are those of torch.nn.LSTM, nn.GRU and nn.RNN under the prefixes
`lstm.`, `gru.` and `rnn.`, so the parameter dict says which cell it is: the model needs no other
record of it. Every cell keeps the LSTM's (h, c) state layout; the GRU and the RNN pass c through
unchanged (it stays zero), so states, checkpoints and data-parallel code are the same for all.
"""

from dataclasses import dataclass

from . import gru, lstm, lstm_variants, rnn
from .backend import array_module

NAMES = ("lstm", "gru", "rnn")


@dataclass(frozen=True)
class Cell:
    name: str = "lstm"
    peepholes: bool = False
    coupled_gates: bool = False

    def __post_init__(self):
        if self.name not in NAMES:
            raise ValueError(f"unknown cell {self.name!r}; use one of: {', '.join(NAMES)}")
        if self.name != "lstm" and (self.peepholes or self.coupled_gates):
            raise ValueError(f"the {self.name} cell has no peephole or coupled-gate variant")

    @classmethod
    def of_config(cls, model_cfg):
        """The cell of a ModelConfig (or any object with its fields; absent ones: the LSTM)."""
        return cls(getattr(model_cfg, "cell", "lstm"), getattr(model_cfg, "peepholes", False),
                   getattr(model_cfg, "coupled_gates", False))

    @property
    def gates(self):
        """How many H-wide gate blocks a layer's weight matrices hold (G = gates * H)."""
        return {"lstm": 3 if self.coupled_gates else 4, "gru": 3, "rnn": 1}[self.name]

    @property
    def plain(self):
        """The LSTM without variants: the kernels of lstm.py, fused on a GPU."""
        return self.name == "lstm" and not (self.peepholes or self.coupled_gates)

    @property
    def splits_recurrent(self):
        """The GRU's recurrent part enters n through r: it cannot be summed with the input part,
        so b_hh stays on the recurrent side and the sampler cannot stack W_ih and W_hh."""
        return self.name == "gru"

    def describe(self):
        if self.name != "lstm":
            return {"gru": "GRU", "rnn": "RNN (tanh)"}[self.name]
        variants = [v for v, on in (("peepholes", self.peepholes),
                                    ("coupled gates", self.coupled_gates)) if on]
        return "LSTM" + (" with " + " and ".join(variants) if variants else "")

    def peephole_names(self):
        if not self.peepholes:
            return ()
        return ("weight_cf", "weight_co") if self.coupled_gates else ("weight_ci", "weight_cf",
                                                                      "weight_co")

    def forget_columns(self, H):
        """The forget gate's columns in a layer's gate axis (for model.forget_bias), or None."""
        if self.name != "lstm":
            return None
        return slice(0, H) if self.coupled_gates else slice(H, 2 * H)

    def layer_shapes(self, k, d_in, H):
        """Layer k's parameters, name -> shape, in the order of PyTorch's state_dict."""
        G, p = self.gates * H, self.name
        shapes = {f"{p}.weight_ih_l{k}": (G, d_in), f"{p}.weight_hh_l{k}": (G, H),
                  f"{p}.bias_ih_l{k}": (G,), f"{p}.bias_hh_l{k}": (G,)}
        shapes.update({f"{p}.{name}_l{k}": (H,) for name in self.peephole_names()})
        return shapes

    def layer(self, params, k):
        """Layer k's recurrent parameters by short name: weight_hh, bias_hh, peephole vectors."""
        names = ("weight_hh", "bias_hh") + self.peephole_names()
        return {name: params[f"{self.name}.{name}_l{k}"] for name in names}

    def input_biases(self, params, k):
        """The biases the caller adds to the input projections (b_ih, and b_hh where the two parts
        of the pre-activation are summed)."""
        b_ih = params[f"{self.name}.bias_ih_l{k}"]
        return [b_ih] if self.splits_recurrent else [b_ih, params[f"{self.name}.bias_hh_l{k}"]]

    # --- the kernels -------------------------------------------------------------------------

    def forward(self, xproj, layer, h0, c0, keep_cache=True):
        """One layer over a window: xproj (T, B, G) input projections with input_biases (consumed);
        h0, c0 (B, H). Returns hs (T, B, H), (h_T, c_T), cache."""
        w_hh = layer["weight_hh"]
        if self.plain:
            return lstm.lstm_forward(xproj, w_hh, h0, c0, keep_cache)
        if self.name == "lstm":
            return lstm_variants.variant_forward(xproj, w_hh, self._peep(layer), h0, c0,
                                                 self.coupled_gates, keep_cache)
        if self.name == "gru":
            return gru.gru_forward(xproj, w_hh, layer["bias_hh"], h0, c0, keep_cache)
        return rnn.rnn_forward(xproj, w_hh, h0, c0, keep_cache)

    def backward(self, dhs, cache):
        """Returns dxproj (T, B, G), {short name: gradient} (weight_hh; bias_hh where it is not the
        same as bias_ih's; the peephole vectors), dh0, dc0."""
        if self.plain:
            dx, dw, dh0, dc0 = lstm.lstm_backward(dhs, cache)
            return dx, {"weight_hh": dw}, dh0, dc0
        if self.name == "lstm":
            dx, dw, dpeep, dh0, dc0 = lstm_variants.variant_backward(dhs, cache)
            grads = {"weight_hh": dw}
            if dpeep is not None:
                grads.update({n: g for n, g in zip(("weight_ci", "weight_cf", "weight_co"), dpeep)
                              if g is not None})
            return dx, grads, dh0, dc0
        if self.name == "gru":
            dx, dw, db, dh0, dc0 = gru.gru_backward(dhs, cache)
            return dx, {"weight_hh": dw, "bias_hh": db}, dh0, dc0
        dx, dw, dh0, dc0 = rnn.rnn_backward(dhs, cache)
        return dx, {"weight_hh": dw}, dh0, dc0

    def step(self, a, rec, layer, h, c):
        """One time step for the sampler, with the training forward's cell code: a (B, G) input
        part with input_biases (overwritten), rec (B, G) = h @ W_hh.T; h, c (B, H) updated."""
        xp = array_module(h)
        scratch, c_out = xp.empty_like(h), xp.empty_like(c)
        if self.plain:
            lstm.cell_forward(a, rec, c, c_out, h, scratch)
            c[...] = c_out
        elif self.name == "lstm":
            lstm_variants.cell_forward(a, rec, c, c_out, h, scratch, self._peep(layer),
                                       self.coupled_gates)
            c[...] = c_out
        elif self.name == "gru":
            rec += layer["bias_hh"]
            gru.cell_forward(a, rec, h, h, scratch)
        else:
            rnn.cell_forward(a, rec, h)

    def _peep(self, layer):
        if not self.peepholes:
            return None
        return (layer.get("weight_ci"), layer["weight_cf"], layer["weight_co"])


def of_params(params):
    """The cell a parameter dict was made for, read from its names and shapes."""
    for name in NAMES:
        w = params.get(f"{name}.weight_hh_l0")
        if w is not None:
            break
    else:
        raise ValueError("no recurrent layer in the parameters")
    if name != "lstm":
        return Cell(name)
    return Cell("lstm", peepholes="lstm.weight_cf_l0" in params,
                coupled_gates=w.shape[0] == 3 * w.shape[1])
