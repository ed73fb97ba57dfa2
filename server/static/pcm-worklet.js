// AudioWorklet: microphone samples (at the AudioContext's rate) -> 16 kHz PCM s16le,
// posted to the page in 100 ms ArrayBuffers. Resampling is a streaming windowed-sinc
// low-pass interpolator (cut-off 7.2 kHz), so speech is not aliased when the context runs
// at 44.1 or 48 kHz.
"use strict";

const TARGET_RATE = 16000;
const HALF_TAPS = 24; // input samples each side of an output position (at 48 kHz: 0.5 ms)

class Pcm16kProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.frameSamples = Math.round(TARGET_RATE * (opts.frameMs || 100) / 1000);
    this.ratio = sampleRate / TARGET_RATE; // input samples per output sample
    this.passThrough = Math.abs(this.ratio - 1) < 1e-9;
    // Low-pass cut-off in cycles per input sample (0.45 of the output rate).
    this.cutoff = Math.min(0.5, 0.45 / this.ratio);
    this.history = new Float32Array(0); // input samples from index `histStart` on
    this.histStart = 0;
    this.pos = 0; // input position (absolute, fractional) of the next output sample
    this.out = new Int16Array(this.frameSamples);
    this.outLen = 0;
    this.running = true;
    this.port.onmessage = (e) => {
      if (e.data && e.data.cmd === "flush") {
        this.emit(true);
        this.running = false;
        this.port.postMessage({ type: "flushed" });
      }
    };
  }

  push(value) {
    const v = Math.max(-1, Math.min(1, value));
    this.out[this.outLen++] = Math.round(v < 0 ? v * 32768 : v * 32767);
    if (this.outLen === this.frameSamples) this.emit(false);
  }

  emit(partial) {
    if (this.outLen === 0) return;
    const buf = partial ? this.out.slice(0, this.outLen) : this.out;
    this.port.postMessage({ type: "audio", buffer: buf.buffer }, [buf.buffer]);
    if (!partial) this.out = new Int16Array(this.frameSamples);
    this.outLen = 0;
  }

  kernel(x) {
    // Windowed sinc (Blackman window over +-HALF_TAPS input samples), unity DC gain.
    const a = 2 * this.cutoff;
    const t = Math.PI * a * x;
    const sinc = x === 0 ? 1 : Math.sin(t) / t;
    const w = 0.42 + 0.5 * Math.cos(Math.PI * x / HALF_TAPS) + 0.08 * Math.cos(2 * Math.PI * x / HALF_TAPS);
    return a * sinc * w;
  }

  process(inputs) {
    if (!this.running) return false;
    const input = inputs[0];
    if (!input || input.length === 0 || input[0].length === 0) return true;
    const mono = input[0]; // the first channel of the microphone
    if (this.passThrough) {
      for (let i = 0; i < mono.length; i++) this.push(mono[i]);
      return true;
    }
    const joined = new Float32Array(this.history.length + mono.length);
    joined.set(this.history, 0);
    joined.set(mono, this.history.length);
    this.history = joined;
    const end = this.histStart + this.history.length; // absolute index after the last input
    while (Math.floor(this.pos) + HALF_TAPS < end) {
      const centre = Math.floor(this.pos);
      let acc = 0;
      let norm = 0;
      for (let k = centre - HALF_TAPS + 1; k <= centre + HALF_TAPS; k++) {
        const h = this.kernel(this.pos - k);
        norm += h;
        const i = k - this.histStart;
        if (i >= 0) acc += this.history[i] * h;
      }
      this.push(acc / norm);
      this.pos += this.ratio;
    }
    const keepFrom = Math.floor(this.pos) - HALF_TAPS;
    if (keepFrom > this.histStart) {
      this.history = this.history.slice(keepFrom - this.histStart);
      this.histStart = keepFrom;
    }
    return true;
  }
}

registerProcessor("pcm16k", Pcm16kProcessor);
