// gust's built-in Java invoker: loads the class named by GUST_HANDLER from the function's
// jars (or classes/ directory) and serves HTTP/1.1 on the Unix socket GUST_SOCKET, one
// thread per connection. The class implements java.util.function.Function (riff style):
// Function<String, ?> gets the body as text, Function<byte[], ?> as bytes, and any other
// Function<T, ?> gets the body parsed as JSON into T (a record, a bean with a no-argument
// constructor, Map, List, arrays, numbers, booleans, enums). A String result is sent as
// text, byte[] as bytes, anything else as JSON. A body that is not JSON for T is a 400; a
// thrown exception is a 500 with the message, its stack trace to stderr (gust logs).
//
// Only the JDK's own classes are used, so it compiles once with javac and starts fast.
package gust;

import java.io.*;
import java.lang.reflect.*;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.*;
import java.nio.charset.StandardCharsets;
import java.nio.file.*;
import java.util.*;
import java.util.function.Function;

public final class Invoker {
    /** The call id of the request the current thread serves, for tagging output lines. */
    static final ThreadLocal<String> CALL = new ThreadLocal<>();

    public static void main(String[] args) throws Exception {
        System.setOut(new Tagged(new FileOutputStream(FileDescriptor.out)));
        System.setErr(new Tagged(new FileOutputStream(FileDescriptor.err)));
        Function<Object, Object> fn;
        Type input;
        String handler = System.getenv("GUST_HANDLER");
        try {
            Class<?> cls = Class.forName(handler);
            if (!Function.class.isAssignableFrom(cls)) {
                throw new IllegalArgumentException(handler + " does not implement java.util.function.Function");
            }
            @SuppressWarnings("unchecked")
            Function<Object, Object> f = (Function<Object, Object>) cls.getDeclaredConstructor().newInstance();
            fn = f;
            input = inputType(cls);
        } catch (Throwable t) {
            t.printStackTrace();
            System.err.println("gust: could not load handler " + handler);
            System.err.flush();
            System.exit(3);
            return;
        }
        Path socket = Path.of(System.getenv("GUST_SOCKET"));
        ServerSocketChannel server = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        server.bind(UnixDomainSocketAddress.of(socket), 1024);
        final Function<Object, Object> handle = fn;
        final Type in = input;
        while (true) {
            SocketChannel conn = server.accept();
            Thread t = new Thread(() -> serve(conn, handle, in));
            t.setDaemon(true);
            t.start();
        }
    }

    /** The declared parameter type of apply (the T of Function<T, R>). */
    static Type inputType(Class<?> cls) {
        for (Method m : cls.getMethods()) {
            if (m.getName().equals("apply") && m.getParameterCount() == 1 && !m.isBridge()) {
                return m.getGenericParameterTypes()[0];
            }
        }
        return Object.class;
    }

    /** The body as apply's parameter: bytes, text, or JSON bound to its type. */
    static Object argument(byte[] body, Type type) {
        if (type == byte[].class) {
            return body;
        }
        String text = new String(body, StandardCharsets.UTF_8);
        if (type == String.class) {
            return text;
        }
        return Json.bind(Json.parse(text), type);
    }

    static void serve(SocketChannel conn, Function<Object, Object> fn, Type input) {
        try (conn) {
            InputStream in = new BufferedInputStream(Channels.newInputStream(conn));
            OutputStream out = new BufferedOutputStream(Channels.newOutputStream(conn));
            while (true) {
                String requestLine = readLine(in);
                if (requestLine == null || requestLine.isEmpty()) {
                    return;
                }
                Map<String, String> headers = new HashMap<>();
                for (String line = readLine(in); line != null && !line.isEmpty(); line = readLine(in)) {
                    int colon = line.indexOf(':');
                    if (colon > 0) {
                        headers.put(line.substring(0, colon).trim().toLowerCase(Locale.ROOT), line.substring(colon + 1).trim());
                    }
                }
                byte[] body = readBody(in, headers);
                CALL.set(headers.getOrDefault("x-call-id", ""));
                int status = 200;
                String type;
                byte[] answer;
                try {
                    Object arg;
                    try {
                        arg = argument(body, input);
                    } catch (IllegalArgumentException e) {
                        throw new BadBody("the body is not valid JSON for " + input.getTypeName() + ": " + e.getMessage());
                    }
                    Object result = fn.apply(arg);
                    if (result instanceof byte[] b) {
                        answer = b;
                        type = "application/octet-stream";
                    } else if (result instanceof String text) {
                        answer = text.getBytes(StandardCharsets.UTF_8);
                        type = "text/plain; charset=utf-8";
                    } else {
                        answer = Json.write(result).getBytes(StandardCharsets.UTF_8);
                        type = "application/json";
                    }
                } catch (BadBody e) {
                    status = 400;
                    type = "application/json";
                    answer = ("{\"error\":\"bad_request\",\"message\":" + json(e.getMessage()) + "}").getBytes(StandardCharsets.UTF_8);
                } catch (Throwable t) {
                    t.printStackTrace();
                    status = 500;
                    type = "application/json";
                    String message = t.getMessage() == null ? t.toString() : t.getMessage();
                    answer = ("{\"error\":\"handler_error\",\"message\":" + json(message) + "}").getBytes(StandardCharsets.UTF_8);
                } finally {
                    System.out.flush();
                    System.err.flush();
                    CALL.remove();
                }
                String reason = switch (status) {
                    case 200 -> " OK";
                    case 400 -> " Bad Request";
                    default -> " Internal Server Error";
                };
                String head = "HTTP/1.1 " + status + reason + "\r\n"
                        + "Content-Type: " + type + "\r\nContent-Length: " + answer.length + "\r\n\r\n";
                out.write(head.getBytes(StandardCharsets.ISO_8859_1));
                out.write(answer);
                out.flush();
            }
        } catch (IOException e) {
            // The gateway closed the connection; nothing to answer.
        }
    }

    static byte[] readBody(InputStream in, Map<String, String> headers) throws IOException {
        String te = headers.getOrDefault("transfer-encoding", "");
        if (te.toLowerCase(Locale.ROOT).contains("chunked")) {
            ByteArrayOutputStream buf = new ByteArrayOutputStream();
            while (true) {
                String size = readLine(in);
                if (size == null) {
                    throw new EOFException("chunked body cut short");
                }
                int n = Integer.parseInt(size.split(";", 2)[0].trim(), 16);
                if (n == 0) {
                    for (String l = readLine(in); l != null && !l.isEmpty(); l = readLine(in)) { }
                    return buf.toByteArray();
                }
                buf.write(in.readNBytes(n));
                readLine(in);
            }
        }
        int len = Integer.parseInt(headers.getOrDefault("content-length", "0"));
        byte[] body = in.readNBytes(len);
        if (body.length < len) {
            throw new EOFException("body cut short");
        }
        return body;
    }

    static String readLine(InputStream in) throws IOException {
        StringBuilder sb = new StringBuilder();
        int c;
        while ((c = in.read()) != -1) {
            if (c == '\n') {
                int n = sb.length();
                return n > 0 && sb.charAt(n - 1) == '\r' ? sb.substring(0, n - 1) : sb.toString();
            }
            sb.append((char) c);
        }
        return sb.length() == 0 ? null : sb.toString();
    }

    static String json(String s) {
        StringBuilder sb = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            switch (c) {
                case '"' -> sb.append("\\\"");
                case '\\' -> sb.append("\\\\");
                case '\n' -> sb.append("\\n");
                case '\r' -> sb.append("\\r");
                case '\t' -> sb.append("\\t");
                default -> {
                    if (c < 0x20) {
                        sb.append(String.format("\\u%04x", (int) c));
                    } else {
                        sb.append(c);
                    }
                }
            }
        }
        return sb.append('"').toString();
    }

    /** A request body apply cannot take: answered 400, not 500. */
    static final class BadBody extends RuntimeException {
        BadBody(String message) {
            super(message);
        }
    }

    /** Just enough JSON for Function<T, R>: parse to Map/List/String/Long/Double/Boolean,
     *  bind that to a declared type, and write any value back. */
    static final class Json {
        private final String s;
        private int i;

        private Json(String s) {
            this.s = s;
        }

        static Object parse(String text) {
            Json p = new Json(text);
            p.space();
            Object v = p.value();
            p.space();
            if (p.i != text.length()) {
                throw p.error("unexpected text after the value");
            }
            return v;
        }

        private IllegalArgumentException error(String what) {
            return new IllegalArgumentException(what + " at offset " + i);
        }

        private void space() {
            while (i < s.length() && Character.isWhitespace(s.charAt(i))) {
                i++;
            }
        }

        private Object value() {
            if (i >= s.length()) {
                throw error("unexpected end");
            }
            char c = s.charAt(i);
            switch (c) {
                case '{': {
                    i++;
                    Map<String, Object> m = new LinkedHashMap<>();
                    space();
                    if (peek('}')) {
                        return m;
                    }
                    do {
                        space();
                        if (i >= s.length() || s.charAt(i) != '"') {
                            throw error("expected a key");
                        }
                        String k = string();
                        space();
                        expect(':');
                        space();
                        m.put(k, value());
                        space();
                    } while (peek(','));
                    expect('}');
                    return m;
                }
                case '[': {
                    i++;
                    List<Object> l = new ArrayList<>();
                    space();
                    if (peek(']')) {
                        return l;
                    }
                    do {
                        space();
                        l.add(value());
                        space();
                    } while (peek(','));
                    expect(']');
                    return l;
                }
                case '"':
                    return string();
                default:
                    if (s.startsWith("true", i)) {
                        i += 4;
                        return Boolean.TRUE;
                    }
                    if (s.startsWith("false", i)) {
                        i += 5;
                        return Boolean.FALSE;
                    }
                    if (s.startsWith("null", i)) {
                        i += 4;
                        return null;
                    }
                    return number();
            }
        }

        private boolean peek(char c) {
            if (i < s.length() && s.charAt(i) == c) {
                i++;
                return true;
            }
            return false;
        }

        private void expect(char c) {
            if (!peek(c)) {
                throw error("expected '" + c + "'");
            }
        }

        private String string() {
            StringBuilder sb = new StringBuilder();
            i++;
            while (i < s.length()) {
                char c = s.charAt(i++);
                if (c == '"') {
                    return sb.toString();
                }
                if (c != '\\') {
                    sb.append(c);
                    continue;
                }
                if (i >= s.length()) {
                    break;
                }
                char e = s.charAt(i++);
                switch (e) {
                    case 'n' -> sb.append('\n');
                    case 't' -> sb.append('\t');
                    case 'r' -> sb.append('\r');
                    case 'b' -> sb.append('\b');
                    case 'f' -> sb.append('\f');
                    case 'u' -> {
                        if (i + 4 > s.length()) {
                            throw error("bad \\u escape");
                        }
                        try {
                            sb.append((char) Integer.parseInt(s.substring(i, i + 4), 16));
                        } catch (NumberFormatException x) {
                            throw error("bad \\u escape");
                        }
                        i += 4;
                    }
                    default -> sb.append(e);
                }
            }
            throw error("unterminated string");
        }

        private Object number() {
            int start = i;
            while (i < s.length() && "+-0123456789.eE".indexOf(s.charAt(i)) >= 0) {
                i++;
            }
            String n = s.substring(start, i);
            if (n.isEmpty()) {
                throw error("unexpected character '" + s.charAt(start) + "'");
            }
            try {
                if (n.contains(".") || n.contains("e") || n.contains("E")) {
                    return Double.parseDouble(n);
                }
                return Long.parseLong(n);
            } catch (NumberFormatException x) {
                try {
                    return new java.math.BigDecimal(n);
                } catch (NumberFormatException y) {
                    i = start;
                    throw error("bad number " + n);
                }
            }
        }

        /** Binds a parsed value to `type`. */
        static Object bind(Object v, Type type) {
            Class<?> raw = rawClass(type);
            if (v == null) {
                if (raw.isPrimitive()) {
                    throw new IllegalArgumentException("null for " + raw.getName());
                }
                return null;
            }
            if (raw == Object.class) {
                return v;
            }
            if (raw == String.class) {
                if (v instanceof String) {
                    return v;
                }
                throw new IllegalArgumentException("expected a string, got " + write(v));
            }
            if (raw == boolean.class || raw == Boolean.class) {
                if (v instanceof Boolean) {
                    return v;
                }
                throw new IllegalArgumentException("expected a boolean, got " + write(v));
            }
            if (Number.class.isAssignableFrom(box(raw))) {
                if (!(v instanceof Number n)) {
                    throw new IllegalArgumentException("expected a number, got " + write(v));
                }
                Class<?> b = box(raw);
                if (b == Integer.class) return n.intValue();
                if (b == Long.class) return n.longValue();
                if (b == Double.class) return n.doubleValue();
                if (b == Float.class) return n.floatValue();
                if (b == Short.class) return n.shortValue();
                if (b == Byte.class) return n.byteValue();
                if (b == java.math.BigDecimal.class) return new java.math.BigDecimal(n.toString());
                if (b == java.math.BigInteger.class) return new java.math.BigInteger(n.toString());
                return n;
            }
            if (raw.isEnum()) {
                for (Object c : raw.getEnumConstants()) {
                    if (((Enum<?>) c).name().equals(v)) {
                        return c;
                    }
                }
                throw new IllegalArgumentException(write(v) + " is not one of " + Arrays.toString(raw.getEnumConstants()));
            }
            Type[] args = type instanceof ParameterizedType p ? p.getActualTypeArguments() : new Type[0];
            if (Map.class.isAssignableFrom(raw)) {
                if (!(v instanceof Map<?, ?> m)) {
                    throw new IllegalArgumentException("expected an object, got " + write(v));
                }
                Type valueType = args.length == 2 ? args[1] : Object.class;
                Map<String, Object> out = new LinkedHashMap<>();
                for (Map.Entry<?, ?> e : m.entrySet()) {
                    out.put((String) e.getKey(), bind(e.getValue(), valueType));
                }
                return out;
            }
            if (Collection.class.isAssignableFrom(raw) || raw.isArray()) {
                if (!(v instanceof List<?> l)) {
                    throw new IllegalArgumentException("expected an array, got " + write(v));
                }
                if (raw.isArray()) {
                    Object arr = Array.newInstance(raw.getComponentType(), l.size());
                    for (int k = 0; k < l.size(); k++) {
                        Array.set(arr, k, bind(l.get(k), raw.getComponentType()));
                    }
                    return arr;
                }
                Type elem = args.length == 1 ? args[0] : Object.class;
                Collection<Object> out = Set.class.isAssignableFrom(raw) ? new LinkedHashSet<>() : new ArrayList<>();
                for (Object o : l) {
                    out.add(bind(o, elem));
                }
                return out;
            }
            if (!(v instanceof Map<?, ?> m)) {
                throw new IllegalArgumentException("expected an object for " + raw.getSimpleName() + ", got " + write(v));
            }
            try {
                if (raw.isRecord()) {
                    RecordComponent[] rc = raw.getRecordComponents();
                    Object[] values = new Object[rc.length];
                    Class<?>[] types = new Class<?>[rc.length];
                    for (int k = 0; k < rc.length; k++) {
                        types[k] = rc[k].getType();
                        values[k] = bind(m.get(rc[k].getName()), rc[k].getGenericType());
                    }
                    Constructor<?> ctor = raw.getDeclaredConstructor(types);
                    ctor.setAccessible(true);
                    return ctor.newInstance(values);
                }
                Constructor<?> ctor = raw.getDeclaredConstructor();
                ctor.setAccessible(true);
                Object bean = ctor.newInstance();
                for (Map.Entry<?, ?> e : m.entrySet()) {
                    String key = (String) e.getKey();
                    Method setter = setter(raw, key);
                    if (setter != null) {
                        setter.invoke(bean, bind(e.getValue(), setter.getGenericParameterTypes()[0]));
                        continue;
                    }
                    try {
                        Field f = raw.getField(key);
                        if (!Modifier.isStatic(f.getModifiers())) {
                            f.set(bean, bind(e.getValue(), f.getGenericType()));
                        }
                    } catch (NoSuchFieldException ignored) {
                        // Unknown keys are ignored, as most JSON binders do.
                    }
                }
                return bean;
            } catch (ReflectiveOperationException e) {
                Throwable cause = e instanceof InvocationTargetException ite && ite.getCause() != null ? ite.getCause() : e;
                throw new IllegalArgumentException("cannot make a " + raw.getSimpleName() + ": " + cause);
            }
        }

        private static Method setter(Class<?> c, String key) {
            String name = "set" + Character.toUpperCase(key.charAt(0)) + key.substring(1);
            for (Method m : c.getMethods()) {
                if (m.getName().equals(name) && m.getParameterCount() == 1) {
                    return m;
                }
            }
            return null;
        }

        private static Class<?> rawClass(Type t) {
            if (t instanceof Class<?> c) return c;
            if (t instanceof ParameterizedType p) return (Class<?>) p.getRawType();
            if (t instanceof GenericArrayType g) return Array.newInstance(rawClass(g.getGenericComponentType()), 0).getClass();
            return Object.class;
        }

        private static Class<?> box(Class<?> c) {
            if (!c.isPrimitive()) return c;
            if (c == int.class) return Integer.class;
            if (c == long.class) return Long.class;
            if (c == double.class) return Double.class;
            if (c == float.class) return Float.class;
            if (c == short.class) return Short.class;
            if (c == byte.class) return Byte.class;
            if (c == boolean.class) return Boolean.class;
            return Character.class;
        }

        /** Any value as JSON text. */
        static String write(Object v) {
            StringBuilder sb = new StringBuilder();
            write(v, sb);
            return sb.toString();
        }

        private static void write(Object v, StringBuilder sb) {
            if (v == null) {
                sb.append("null");
            } else if (v instanceof String || v instanceof Character) {
                sb.append(json(v.toString()));
            } else if (v instanceof Double d && (d.isNaN() || d.isInfinite())) {
                sb.append("null");
            } else if (v instanceof Number || v instanceof Boolean) {
                sb.append(v);
            } else if (v instanceof Enum<?> e) {
                sb.append(json(e.name()));
            } else if (v instanceof Map<?, ?> m) {
                sb.append('{');
                boolean first = true;
                for (Map.Entry<?, ?> e : m.entrySet()) {
                    if (!first) sb.append(',');
                    first = false;
                    sb.append(json(String.valueOf(e.getKey()))).append(':');
                    write(e.getValue(), sb);
                }
                sb.append('}');
            } else if (v instanceof Iterable<?> it) {
                sb.append('[');
                boolean first = true;
                for (Object o : it) {
                    if (!first) sb.append(',');
                    first = false;
                    write(o, sb);
                }
                sb.append(']');
            } else if (v.getClass().isArray()) {
                sb.append('[');
                for (int k = 0; k < Array.getLength(v); k++) {
                    if (k > 0) sb.append(',');
                    write(Array.get(v, k), sb);
                }
                sb.append(']');
            } else if (v instanceof Optional<?> o) {
                write(o.orElse(null), sb);
            } else {
                write(properties(v), sb);
            }
        }

        /** A record's components or a bean's getters and public fields, in order. */
        private static Map<String, Object> properties(Object v) {
            Map<String, Object> out = new LinkedHashMap<>();
            Class<?> c = v.getClass();
            try {
                if (c.isRecord()) {
                    for (RecordComponent rc : c.getRecordComponents()) {
                        Method m = rc.getAccessor();
                        m.setAccessible(true);
                        out.put(rc.getName(), m.invoke(v));
                    }
                    return out;
                }
                for (Field f : c.getFields()) {
                    if (!Modifier.isStatic(f.getModifiers())) {
                        out.put(f.getName(), f.get(v));
                    }
                }
                for (Method m : c.getMethods()) {
                    String n = m.getName();
                    if (m.getParameterCount() != 0 || Modifier.isStatic(m.getModifiers()) || n.equals("getClass")) {
                        continue;
                    }
                    String key = n.startsWith("get") && n.length() > 3 ? n.substring(3)
                            : n.startsWith("is") && n.length() > 2 && m.getReturnType() == boolean.class ? n.substring(2) : null;
                    if (key != null) {
                        out.put(Character.toLowerCase(key.charAt(0)) + key.substring(1), m.invoke(v));
                    }
                }
            } catch (ReflectiveOperationException e) {
                out.put("error", "cannot read " + c.getSimpleName() + ": " + e);
            }
            return out;
        }
    }

    /** Prefixes every line written while a call is being served with \x1f<call id>\x1f. */
    static final class Tagged extends PrintStream {
        private boolean atStart = true;

        Tagged(OutputStream out) {
            super(new BufferedOutputStream(out), true, StandardCharsets.UTF_8);
        }

        @Override
        public synchronized void write(byte[] buf, int off, int len) {
            String call = CALL.get();
            for (int i = off; i < off + len; i++) {
                if (atStart && call != null && !call.isEmpty()) {
                    super.write(0x1f);
                    byte[] id = call.getBytes(StandardCharsets.UTF_8);
                    super.write(id, 0, id.length);
                    super.write(0x1f);
                }
                super.write(buf[i]);
                atStart = buf[i] == '\n';
            }
        }

        @Override
        public synchronized void write(int b) {
            write(new byte[] {(byte) b}, 0, 1);
        }
    }
}
