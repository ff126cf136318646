"""Winograd F(4x4, 3x3) convolution (Lavin & Gray 2016) for 3x3, stride 1, pad 1 layers on CPU.

Each 4x4 output tile is computed from a 6x6 input tile as ``A^T [(G g G^T) * (B^T d B)] A``:
36 matrix products ``[tiles, C_in] @ [C_in, C_out]``: 2.25 multiply-adds per output pixel and
channel pair instead of 9 (4x fewer, less on partial edge tiles), at the cost of three
elementwise transforms. The
transforms are written as sums of strided views, so XLA fuses each into one loop; the
products are 36 plain dots. :func:`conv3x3` computes its input gradient and kernel gradient
the same way. In float32 results differ from a direct convolution by about 1e-5 of their
scale (the transforms' constants 1/4, 1/6, 1/24 round), as cuDNN's and oneDNN's Winograd
paths do. :func:`ssd_jax.ops.conv.conv2d` uses it on the CPU for wide layers
(``conv.WINOGRAD_MIN_CHANNELS``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

TILE = 4  # output tile (input tiles are TILE + 2 = 6 wide)

B_T = np.array([[4, 0, -5, 0, 1, 0],
                [0, -4, -4, 1, 1, 0],
                [0, 4, -4, -1, 1, 0],
                [0, -2, -1, 2, 1, 0],
                [0, 2, -1, -2, 1, 0],
                [0, 4, 0, -5, 0, 1]], np.float64)
G = np.array([[1 / 4, 0, 0],
              [-1 / 6, -1 / 6, -1 / 6],
              [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6],
              [1 / 24, -1 / 12, 1 / 6],
              [0, 0, 1]], np.float64)
A_T = np.array([[1, 1, 1, 1, 1, 0],
                [0, 1, -1, 2, -2, 0],
                [0, 1, 1, 4, 4, 0],
                [0, 1, -1, 8, -8, 1]], np.float64)


def _combine(terms, matrix):
    """``[sum_k matrix[i, k] * terms[k] for i]``, with the zero and +-1 entries folded away."""
    out = []
    for row in matrix:
        acc = None
        for coef, term in zip(row, terms):
            if coef == 0:
                continue
            term = term if coef == 1 else -term if coef == -1 else term * float(coef)
            acc = term if acc is None else acc + term
        out.append(acc)
    return out


def _tile_transform(padded, matrix, tiles_hw):
    """``M d M^T`` of every tile of ``padded [N, Hp, Wp, C]`` (tiles ``matrix.shape[1]`` wide,
    ``TILE`` apart) -> ``matrix.shape[0] ** 2`` arrays ``[N * th * tw, C]``, row-major."""
    taps, c = matrix.shape[1], padded.shape[-1]
    th, tw = tiles_hw
    rows = [lax.slice_in_dim(padded, k, k + TILE * (th - 1) + 1, TILE, axis=1) for k in range(taps)]
    out = []
    for row in _combine(rows, matrix):
        cols = [lax.slice_in_dim(row, k, k + TILE * (tw - 1) + 1, TILE, axis=2) for k in range(taps)]
        out.extend(v.reshape(-1, c) for v in _combine(cols, matrix))
    return out


def _input_transform(x, tiles_hw):
    """``x [N, H, W, C]`` -> 36 arrays ``[N * th * tw, C]``: ``B^T d B`` of every 6x6 tile of the padded input."""
    _, h, w, _ = x.shape
    th, tw = tiles_hw
    return _tile_transform(jnp.pad(x, ((0, 0), (1, th * TILE + 1 - h), (1, tw * TILE + 1 - w), (0, 0))), B_T, tiles_hw)


def _tile_counts(h, w):
    """Output tiles ``(th, tw)`` covering an ``h x w`` map."""
    return -(-h // TILE), -(-w // TILE)


def _untile(flat, matrix):
    """``[sum_ab matrix[i, a] matrix[j, b] grid[a][b]]`` for every ``(i, j)``, row-major, where
    ``flat`` is the square grid row-major (``grid[a][b] = flat[a * matrix.shape[1] + b]``)."""
    side = matrix.shape[1]
    per_row = [_combine(flat[a * side:(a + 1) * side], matrix) for a in range(side)]  # [a][j]
    per_col = [_combine([row[j] for row in per_row], matrix) for j in range(matrix.shape[0])]  # [j][i]
    return [per_col[j][i] for i in range(matrix.shape[0]) for j in range(matrix.shape[0])]


def kernel_transform(kernel, flip: bool = False):
    """``kernel [3, 3, C_in, C_out]`` -> 36 arrays ``[C_in, C_out]``: ``G g G^T`` per channel pair.

    ``flip``: of the spatially flipped kernel (taps picked in reverse, so the fused loops read
    the kernel in its own layout).
    """
    taps = (2, 1, 0) if flip else (0, 1, 2)
    return _untile([kernel[i, j] for i in taps for j in taps], G)


def _output_transform(products, n, hw, tiles_hw):
    """36 arrays ``[N * th * tw, C]`` -> ``[N, H, W, C]``: ``A^T m A`` per tile, tiles laid out."""
    th, tw = tiles_hw
    c = products[0].shape[-1]
    tile = [v.reshape(n, th, tw, c) for v in _untile(products, A_T)]  # [i * TILE + j]
    y = jnp.stack(tile).reshape(TILE, TILE, n, th, tw, c).transpose(2, 3, 0, 4, 1, 5)
    y = y.reshape(n, th * TILE, tw * TILE, c)
    return y[:, :hw[0], :hw[1]]


def winograd_conv3x3(x, kernel, input_grad: bool = False):
    """``lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)))`` NHWC/HWIO by Winograd F(4x4, 3x3).

    ``x [N, H, W, C_in]``, ``kernel [3, 3, C_in, C_out]`` -> ``[N, H, W, C_out]``. With
    ``input_grad``, ``x`` is an output gradient ``[N, H, W, C_out]`` and the result its input
    gradient ``[N, H, W, C_in]``: the same convolution with the spatially flipped kernel,
    contracted over ``C_out``.
    """
    n, h, w, _ = x.shape
    tiles = _tile_counts(h, w)
    contract = (((1,), (1 if input_grad else 0,)), ((), ()))
    products = [lax.dot_general(v, u, contract)
                for v, u in zip(_input_transform(x, tiles), kernel_transform(kernel, flip=input_grad))]
    return _output_transform(products, n, (h, w), tiles)


def _gradient_transform(g, tiles_hw):
    """``g [N, H, W, C]`` -> 36 arrays ``[N * th * tw, C]``: ``A g A^T`` of every 4x4 tile (zero-padded)."""
    _, h, w, _ = g.shape
    th, tw = tiles_hw
    return _tile_transform(jnp.pad(g, ((0, 0), (0, th * TILE - h), (0, tw * TILE - w), (0, 0))), A_T.T, tiles_hw)


def winograd_kernel_grad(x, g):
    """Kernel gradient of the 3x3, stride 1, pad 1 convolution: ``x [N, H, W, C_in]``, ``g [N, H, W, C_out]``
    -> ``[3, 3, C_in, C_out]``, by Winograd F(3x3, 4x4) (the transpose of F(4x4, 3x3)).

    ``dW[u, v] = sum_ab G[a, u] G[b, v] M_ab`` with ``M_ab = sum_tiles (B^T d B)_ab^T (A g A^T)_ab``:
    36 products contracting over the tiles, 4x fewer multiply-adds than the direct sum.
    """
    tiles = _tile_counts(*x.shape[1:3])
    contract = (((0,), (0,)), ((), ()))
    m = [lax.dot_general(v, d, contract) for v, d in zip(_input_transform(x, tiles), _gradient_transform(g, tiles))]
    return jnp.stack(_untile(m, G.T)).reshape(3, 3, *m[0].shape)


@jax.custom_vjp
def conv3x3(x, kernel):
    """3x3, stride 1, pad 1 convolution (NHWC/HWIO) computed by Winograd F(4x4, 3x3), gradients too.

    The input gradient of such a convolution is the same convolution of the output gradient
    with the spatially flipped kernel, contracted over the output channels
    (:func:`winograd_conv3x3` with ``input_grad``); the kernel gradient is
    :func:`winograd_kernel_grad`.
    """
    return winograd_conv3x3(x, kernel)


def _conv3x3_fwd(x, kernel):
    return winograd_conv3x3(x, kernel), (x, kernel)


def _conv3x3_bwd(res, g):
    x, kernel = res
    return winograd_conv3x3(g, kernel, input_grad=True), winograd_kernel_grad(x, g).astype(kernel.dtype)


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)
