// Types of `spanline` (spanline.js): span line encoders (FORMAT.md, format v1) and the native
// tracer. Hand-written; CommonJS (`const spanline = require('spanline')`).

export declare const VERSION: 1;
export declare const MAX_LINE: number;
export declare const RESERVE: number;
export declare const MAX_NAME: number;
export declare const MAX_KEY: number;
export declare const MAX_VALUE: number;
export declare const MAX_ATTRIBUTES: number;
export declare const MAX_EVENTS: number;
export declare const MAX_LINKS: number;
export declare const MAX_BATCH_SPANS: number;
export declare const CLASS_NAME: 0;
export declare const CLASS_KEY: 1;
export declare const CLASS_VALUE: 2;

/** A string of the model, or one an earlier stage already truncated. */
export type ModelString = string | { text: string; truncated?: boolean };

export type AttributeType = 'string' | 'int' | 'float' | 'bool';

/** One attribute of the span model. `int` values are decimal text, bigint or number. */
export interface ModelAttribute {
  key: ModelString;
  type: AttributeType;
  value: string | number | bigint | boolean | ModelString;
}

export interface ModelEvent {
  /** Microseconds after the span start (may be negative). */
  offset_us: number | bigint | string;
  name: ModelString;
  attributes?: ModelAttribute[];
}

export interface ModelLink {
  /** 32 hex digits. */
  trace_id: string;
  /** 16 hex digits. */
  span_id: string;
  attributes?: ModelAttribute[];
}

export type SpanKindName = 'internal' | 'server' | 'client' | 'producer' | 'consumer';
export type StatusName = 'unset' | 'ok' | 'error';

/** The span model of the conformance vectors (fixtures/conformance/valid.json). */
export interface SpanModel {
  trace_id: string;
  span_id: string;
  parent_span_id?: string | null;
  /** Microseconds since the Unix epoch. */
  start_us: number | bigint | string;
  duration_us: number | bigint | string;
  name: ModelString;
  kind?: SpanKindName;
  status?: StatusName;
  status_message?: ModelString | null;
  service?: ModelString | null;
  request_id?: ModelString | null;
  attributes?: ModelAttribute[];
  events?: ModelEvent[];
  links?: ModelLink[];
  resource?: ModelAttribute[];
  dropped?: { attributes?: number; events?: number; links?: number };
}

/** One span record, without newline. */
export declare function encodeSpan(span: SpanModel): string;
/** encodeSpan without its fast path for common spans: the same bytes, slower (a test reference). */
export declare function encodeSpanGeneral(span: SpanModel): string;
/** The open record (flag `u`) announcing a span when it starts. */
export declare function encodeOpen(span: SpanModel): string;
/** Spans of one trace as one batch record; throws RangeError when they need more. */
export declare function encodeBatch(spans: SpanModel[]): string;
/** Spans of one trace as as many batch records as needed. */
export declare function encodeBatches(spans: SpanModel[]): string[];
export declare function formatFloat(x: number | string): string;
export declare function escapeString(s: ModelString, cls: 0 | 1 | 2, limit: number): string;
/** Parses OTEL_RESOURCE_ATTRIBUTES text. */
export declare function parseResourceAttributes(text: string | undefined | null): ModelAttribute[];
/** Wall clock in microseconds since the epoch. */
export declare function nowUs(): number;

export type TagValue = string | number | bigint | boolean | null | undefined | object;

export declare class SpanContext {
  constructor(traceId: string, spanId: string);
  readonly traceId: string;
  readonly spanId: string;
  toTraceId(): string;
  toSpanId(): string;
}

/** A Span, a SpanContext, or anything with traceId/spanId or toTraceId()/toSpanId(). */
export type ContextLike =
  | Span
  | SpanContext
  | { traceId: string; spanId: string }
  | { toTraceId(): string; toSpanId(): string };

export interface StartSpanOptions {
  childOf?: ContextLike | null;
  followsFrom?: ContextLike | ContextLike[];
  kind?: SpanKindName | 'rpc.server' | 'rpc.client';
  tags?: Record<string, TagValue>;
  /** Milliseconds since the epoch (OpenTracing). */
  startTime?: number;
  requestId?: string | null;
  /** Write an open record at once (the invocation's entry span). */
  announce?: boolean;
}

export declare class Span {
  announce(): this;
  context(): SpanContext;
  tracer(): Tracer;
  setOperationName(name: string): this;
  /** `error` sets the status, `span.kind` the kind; anything else is an attribute. */
  setTag(key: string, value: TagValue): this;
  addTags(tags: Record<string, TagValue>): this;
  log(fields: Record<string, TagValue>, timestampMs?: number): this;
  logEvent(name: string, payload?: unknown): this;
  addLink(ctx: ContextLike, attributes?: Record<string, TagValue>): this;
  setError(message?: string | Error): this;
  setOk(): this;
  toModel(durationUs: number): SpanModel;
  /** Writes the span line once. finishTime: milliseconds since the epoch. Never throws. */
  finish(finishTime?: number): void;
}

export interface TracerOptions {
  /** `*s=`; default OTEL_SERVICE_NAME, else none. */
  service?: string | null;
  /** Default: parsed from OTEL_RESOURCE_ATTRIBUTES. */
  resource?: Record<string, TagValue> | ModelAttribute[];
  /** `*r=`, the Lambda request id. */
  requestId?: string | null;
  /** Collect spans per trace; flush() writes batch records. */
  buffered?: boolean;
}

export declare class Tracer {
  constructor(options?: TracerOptions);
  service: string | null;
  resource: ModelAttribute[];
  requestId: string | null;
  buffered: boolean;
  /** Writes that failed (counted; the first one is reported on stderr). */
  failures: number;
  startSpan(name: string, options?: StartSpanOptions): Span;
  setRequestId(id: string | null | undefined): void;
  flush(): void;
}
