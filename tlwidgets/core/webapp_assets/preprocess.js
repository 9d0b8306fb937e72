/*
 * Image preprocessing of a tlwidgets web app, the same computation as the Python side:
 * torchvision's Resize (shorter side to `resize_size`, the longer side capped at
 * `max_aspect` times that), Pillow's resampling (the same filters, coefficients and 8-bit
 * rounding, so the resized pixels are the ones Pillow gives), CenterCrop (zero padding when
 * the image is smaller than the crop), ToTensor and Normalize in float32.
 *
 * Works as a classic browser script (window.TLWPreprocess) and as a Node module.
 */
(function (root, factory) {
  const api = factory();
  if (typeof module === "object" && module.exports) {
    module.exports = api;
  } else {
    root.TLWPreprocess = api;
  }
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";

  const PRECISION_BITS = 32 - 8 - 2;
  const ONE = 1 << PRECISION_BITS;
  const CLIP_TOP = ONE * 256; // 1 << PRECISION_BITS << 8
  const HALF = 1 << (PRECISION_BITS - 1);

  // Pillow's filters (src/libImaging/Resample.c).
  const FILTERS = {
    bilinear: {
      support: 1.0,
      weight: (x) => {
        if (x < 0.0) x = -x;
        return x < 1.0 ? 1.0 - x : 0.0;
      },
    },
    bicubic: {
      support: 2.0,
      weight: (x) => {
        const a = -0.5;
        if (x < 0.0) x = -x;
        if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
        if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
        return 0.0;
      },
    },
  };

  /** Python's round(): halves go to the even neighbour. */
  function pyRound(x) {
    const r = Math.round(x);
    return Math.abs(x - Math.trunc(x)) === 0.5 && r % 2 !== 0 ? r - 1 : r;
  }

  /** [width, height] after the resize step, as tlwidgets' Resize computes it. */
  function resizedSize(width, height, size, maxAspect) {
    const cap = maxAspect * size;
    const longSide = Math.max(width, height);
    const shortSide = Math.min(width, height);
    if (longSide * size > cap * Math.max(shortSide, 1)) {
      const scale = cap / longSide;
      return [Math.max(1, pyRound(width * scale)), Math.max(1, pyRound(height * scale))];
    }
    const newLong = Math.trunc((size * longSide) / shortSide);
    return width <= height ? [size, newLong] : [newLong, size];
  }

  /** Pillow's precompute_coeffs + normalize_coeffs_8bpc for one axis. */
  function coefficients(inSize, outSize, filter) {
    const scale = inSize / outSize;
    const filterscale = scale < 1.0 ? 1.0 : scale;
    const support = filter.support * filterscale;
    const ksize = Math.ceil(support) * 2 + 1;
    const bounds = new Int32Array(outSize * 2);
    const kk = new Float64Array(outSize * ksize);
    const pre = new Float64Array(ksize);
    const ss = 1.0 / filterscale;
    for (let xx = 0; xx < outSize; xx++) {
      const center = (xx + 0.5) * scale;
      let xmin = Math.trunc(center - support + 0.5);
      if (xmin < 0) xmin = 0;
      let xmax = Math.trunc(center + support + 0.5);
      if (xmax > inSize) xmax = inSize;
      xmax -= xmin;
      let ww = 0.0;
      for (let x = 0; x < xmax; x++) {
        const w = filter.weight((x + xmin - center + 0.5) * ss);
        pre[x] = w;
        ww += w;
      }
      for (let x = 0; x < xmax; x++) {
        const k = ww !== 0.0 ? pre[x] / ww : pre[x];
        kk[xx * ksize + x] = k < 0 ? Math.trunc(-0.5 + k * ONE) : Math.trunc(0.5 + k * ONE);
      }
      bounds[xx * 2] = xmin;
      bounds[xx * 2 + 1] = xmax;
    }
    return { bounds, kk, ksize };
  }

  function clip8(v) {
    if (v >= CLIP_TOP) return 255;
    if (v <= 0) return 0;
    return Math.floor(v / ONE);
  }

  /** Horizontal pass over packed RGB rows (Pillow's ImagingResampleHorizontal_8bpc). */
  function horizontal(src, width, height, outWidth, filter) {
    const { bounds, kk, ksize } = coefficients(width, outWidth, filter);
    const out = new Uint8Array(outWidth * height * 3);
    for (let y = 0; y < height; y++) {
      const row = y * width * 3;
      for (let xx = 0; xx < outWidth; xx++) {
        const xmin = bounds[xx * 2];
        const xmax = bounds[xx * 2 + 1];
        const k = xx * ksize;
        let s0 = HALF;
        let s1 = HALF;
        let s2 = HALF;
        for (let x = 0; x < xmax; x++) {
          const p = row + (x + xmin) * 3;
          const w = kk[k + x];
          s0 += src[p] * w;
          s1 += src[p + 1] * w;
          s2 += src[p + 2] * w;
        }
        const o = (y * outWidth + xx) * 3;
        out[o] = clip8(s0);
        out[o + 1] = clip8(s1);
        out[o + 2] = clip8(s2);
      }
    }
    return out;
  }

  /** Vertical pass over packed RGB (Pillow's ImagingResampleVertical_8bpc). */
  function vertical(src, width, height, outHeight, filter) {
    const { bounds, kk, ksize } = coefficients(height, outHeight, filter);
    const out = new Uint8Array(width * outHeight * 3);
    for (let yy = 0; yy < outHeight; yy++) {
      const ymin = bounds[yy * 2];
      const ymax = bounds[yy * 2 + 1];
      const k = yy * ksize;
      for (let x = 0; x < width; x++) {
        let s0 = HALF;
        let s1 = HALF;
        let s2 = HALF;
        for (let y = 0; y < ymax; y++) {
          const p = ((y + ymin) * width + x) * 3;
          const w = kk[k + y];
          s0 += src[p] * w;
          s1 += src[p + 1] * w;
          s2 += src[p + 2] * w;
        }
        const o = (yy * width + x) * 3;
        out[o] = clip8(s0);
        out[o + 1] = clip8(s1);
        out[o + 2] = clip8(s2);
      }
    }
    return out;
  }

  /** Pillow's nearest-neighbour resize (ImagingScaleAffine: positions accumulate in steps). */
  function nearest(src, width, height, outWidth, outHeight) {
    const xin = new Int32Array(outWidth);
    const ax = width / outWidth;
    const ay = height / outHeight;
    let xo = ax * 0.5;
    for (let x = 0; x < outWidth; x++) {
      xin[x] = Math.min(width - 1, Math.max(0, Math.trunc(xo)));
      xo += ax;
    }
    const out = new Uint8Array(outWidth * outHeight * 3);
    let yo = ay * 0.5;
    for (let y = 0; y < outHeight; y++) {
      const yi = Math.min(height - 1, Math.max(0, Math.trunc(yo)));
      yo += ay;
      for (let x = 0; x < outWidth; x++) {
        const p = (yi * width + xin[x]) * 3;
        const o = (y * outWidth + x) * 3;
        out[o] = src[p];
        out[o + 1] = src[p + 1];
        out[o + 2] = src[p + 2];
      }
    }
    return out;
  }

  /** Packed RGB resized to outWidth x outHeight with Pillow's `interpolation`. */
  function resizeRGB(rgb, width, height, outWidth, outHeight, interpolation) {
    if (width === outWidth && height === outHeight) return rgb;
    if (interpolation === "nearest") return nearest(rgb, width, height, outWidth, outHeight);
    const filter = FILTERS[interpolation];
    if (!filter) throw new Error("Unknown interpolation " + JSON.stringify(interpolation));
    let data = rgb;
    if (outWidth !== width) data = horizontal(data, width, height, outWidth, filter);
    if (outHeight !== height) data = vertical(data, outWidth, height, outHeight, filter);
    return data;
  }

  /** RGBA pixels (canvas ImageData order) to packed RGB. */
  function rgbaToRGB(rgba, width, height) {
    const n = width * height;
    const out = new Uint8Array(n * 3);
    for (let i = 0; i < n; i++) {
      out[i * 3] = rgba[i * 4];
      out[i * 3 + 1] = rgba[i * 4 + 1];
      out[i * 3 + 2] = rgba[i * 4 + 2];
    }
    return out;
  }

  /** Top-left corner of the crop and the zero padding, as torchvision's center_crop. */
  function cropBox(width, height, crop) {
    const padLeft = crop > width ? Math.floor((crop - width) / 2) : 0;
    const padTop = crop > height ? Math.floor((crop - height) / 2) : 0;
    const padRight = crop > width ? Math.floor((crop - width + 1) / 2) : 0;
    const padBottom = crop > height ? Math.floor((crop - height + 1) / 2) : 0;
    const w = width + padLeft + padRight;
    const h = height + padTop + padBottom;
    let top = 0;
    let left = 0;
    if (!(w === crop && h === crop)) {
      top = pyRound((h - crop) / 2.0);
      left = pyRound((w - crop) / 2.0);
    }
    return { top: top - padTop, left: left - padLeft };
  }

  /**
   * The resized and cropped picture as packed RGB bytes (crop x crop x 3).
   *
   * @param {Uint8Array|Uint8ClampedArray} rgba pixels, 4 bytes each (ImageData.data)
   */
  function resizeAndCrop(rgba, width, height, prep) {
    const [rw, rh] = resizedSize(width, height, prep.resize_size, prep.max_aspect);
    const resized = resizeRGB(rgbaToRGB(rgba, width, height), width, height, rw, rh, prep.interpolation);
    const crop = prep.input_size;
    const { top, left } = cropBox(rw, rh, crop);
    const out = new Uint8Array(crop * crop * 3);
    for (let y = 0; y < crop; y++) {
      const sy = y + top;
      if (sy < 0 || sy >= rh) continue;
      for (let x = 0; x < crop; x++) {
        const sx = x + left;
        if (sx < 0 || sx >= rw) continue;
        const p = (sy * rw + sx) * 3;
        const o = (y * crop + x) * 3;
        out[o] = resized[p];
        out[o + 1] = resized[p + 1];
        out[o + 2] = resized[p + 2];
      }
    }
    return out;
  }

  /** The model's input: 1 x 3 x S x S float32, (pixel / 255 - mean) / std per channel. */
  function toTensor(rgb, size, mean, std) {
    const plane = size * size;
    const out = new Float32Array(3 * plane);
    const f = Math.fround;
    for (let c = 0; c < 3; c++) {
      const m = f(mean[c]);
      const s = f(std[c]);
      for (let i = 0; i < plane; i++) {
        out[c * plane + i] = f(f(f(rgb[i * 3 + c] / 255) - m) / s);
      }
    }
    return out;
  }

  function preprocess(rgba, width, height, prep) {
    const rgb = resizeAndCrop(rgba, width, height, prep);
    return toTensor(rgb, prep.input_size, prep.mean, prep.std);
  }

  return { preprocess, resizeAndCrop, resizedSize, resizeRGB, toTensor, pyRound };
});
