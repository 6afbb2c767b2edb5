/** A clock tests move by hand instead of sleeping (STYLE habit 6). */
export class ManualClock {
  #ms: number;
  constructor(startMs = Date.now()) {
    this.#ms = startMs;
  }
  readonly now = (): number => this.#ms;
  advance(ms: number): void {
    this.#ms += ms;
  }
}
