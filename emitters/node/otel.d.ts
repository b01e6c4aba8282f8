// Types of `spanline/otel`: the OpenTelemetry bridge. Structural types, so that this file needs
// no @opentelemetry package to type-check; the classes fit @opentelemetry/sdk-trace-base's
// SpanProcessor and SpanExporter interfaces (1.x and 2.x).
import type { SpanModel } from './index';

/** What the bridge reads of an @opentelemetry/sdk-trace-base ReadableSpan. */
export interface ReadableSpanLike {
  name: string;
  kind: number;
  spanContext(): { traceId: string; spanId: string; traceFlags: number };
  parentSpanContext?: { spanId: string; isRemote?: boolean };
  parentSpanId?: string;
  startTime: [number, number];
  endTime: [number, number];
  status: { code: number; message?: string };
  attributes: Record<string, unknown>;
  events: { name: string; time: [number, number]; attributes?: Record<string, unknown> }[];
  links: { context: { traceId: string; spanId: string }; attributes?: Record<string, unknown> }[];
  resource?: { attributes: Record<string, unknown>; asyncAttributesPending?: boolean };
  droppedAttributesCount?: number;
  droppedEventsCount?: number;
  droppedLinksCount?: number;
}

export interface SpanlineOtelOptions {
  /** `*s=` instead of the Resource's service.name. */
  service?: string;
  /** `*r=` until setRequestId() or a span's faas.invocation_id says otherwise. */
  requestId?: string | null;
  /** Which resource attributes become `+` fields; default: all but telemetry.sdk.*. */
  resourceFilter?: (key: string) => boolean;
  /** Where lines go; default process.stdout.write. */
  write?: (text: string) => void;
}

export interface SpanlineProcessorOptions extends SpanlineOtelOptions {
  /** true: an open record when an entry span (server/consumer without local parent) starts. */
  announce?: boolean | ((span: ReadableSpanLike) => boolean);
}

/** A synchronous SpanProcessor: the line is written in onEnd. */
export declare class SpanlineSpanProcessor {
  constructor(options?: SpanlineProcessorOptions);
  failures: number;
  setRequestId(id: string | null | undefined): void;
  onStart(span: ReadableSpanLike, parentContext: unknown): void;
  onEnd(span: ReadableSpanLike): void;
  forceFlush(): Promise<void>;
  shutdown(): Promise<void>;
}

export interface ExportResultLike {
  code: 0 | 1;
  error?: Error;
}

/** A SpanExporter writing one span line per span. */
export declare class SpanlineSpanExporter {
  constructor(options?: SpanlineOtelOptions);
  failures: number;
  setRequestId(id: string | null | undefined): void;
  export(spans: ReadableSpanLike[], resultCallback: (result: ExportResultLike) => void): void;
  forceFlush(): Promise<void>;
  shutdown(): Promise<void>;
}

/** ReadableSpan → the span model that spanline's encodeSpan writes. */
export declare function toModel(span: ReadableSpanLike, options?: SpanlineOtelOptions): SpanModel;
