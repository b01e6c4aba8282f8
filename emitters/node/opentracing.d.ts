// Types of `spanline/opentracing`: an OpenTracing tracer that prints span lines. Needs the
// `opentracing` package (optional peer dependency).
import * as opentracing from 'opentracing';
import type { ModelAttribute, TagValue } from './index';

export interface SpanlineTracerOptions {
  /** Lightstep's option name for the service (`*s=`). */
  component_name?: string;
  service?: string;
  resource?: Record<string, TagValue> | ModelAttribute[];
  requestId?: string | null;
  buffered?: boolean;
  /** Options of network reporters are accepted and ignored. */
  [option: string]: unknown;
}

export declare class SpanlineSpanContext extends opentracing.SpanContext {
  constructor(traceId: string, spanId: string, sampled?: boolean, baggage?: Record<string, string>);
  toTraceId(): string;
  toSpanId(): string;
}

export declare class SpanlineSpan extends opentracing.Span {
  /** Writes an open record now (the invocation's entry span). */
  announce(): this;
  setError(message?: string | Error): this;
}

export declare class SpanlineTracer extends opentracing.Tracer {
  constructor(options?: SpanlineTracerOptions);
  setRequestId(id: string | null | undefined): void;
  flush(done?: (err: Error | null) => void): Promise<void>;
}
