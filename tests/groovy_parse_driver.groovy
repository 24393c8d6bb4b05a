// Parse Groovy scripts with the Groovy that QuPath runs, without running them.
//
// Usage: java -cp groovy-4.x.jar groovy.ui.GroovyMain groovy_parse_driver.groovy [--calls] FILE...
//        ... groovy_parse_driver.groovy [--calls] -      (file paths on stdin, one per line)
//
// For every file one line of JSON is printed: {"file", "ok", "errors": [{"line", "column", "message"}], "calls"}.
// A script is ok when it compiles to the CONVERSION phase (syntax) and the SEMANTIC_ANALYSIS phase reports
// nothing but classes it cannot resolve (QuPath and the SAM extension are not on the class path here), so
// errors such as a variable declared twice in one scope are still caught.
// With --calls, "calls" lists every method call, constructor call and variable declaration of the script,
// in source order, with its literal arguments, so that a test can read values back as Groovy sees them.

import org.codehaus.groovy.ast.CodeVisitorSupport
import org.codehaus.groovy.ast.expr.*
import org.codehaus.groovy.control.CompilationUnit
import org.codehaus.groovy.control.CompilerConfiguration
import org.codehaus.groovy.control.MultipleCompilationErrorsException
import org.codehaus.groovy.control.Phases
import org.codehaus.groovy.control.messages.ExceptionMessage
import org.codehaus.groovy.control.messages.SimpleMessage
import org.codehaus.groovy.control.messages.SyntaxErrorMessage

class Json {
    static String q(String s) {
        if (s == null) return 'null'
        def out = new StringBuilder('"')
        for (char ch : s.toCharArray()) {
            switch (ch) {
                case '"': out.append('\\"'); break
                case '\\': out.append('\\\\'); break
                case '\n': out.append('\\n'); break
                case '\r': out.append('\\r'); break
                case '\t': out.append('\\t'); break
                default:
                    if (ch < 0x20 || ch > 0x7e) out.append(String.format(Locale.ROOT, '\\u%04x', (int) ch))
                    else out.append(ch)
            }
        }
        out.append('"').toString()
    }

    static String value(Expression e) {
        if (e instanceof ConstantExpression) {
            def v = e.value
            if (v == null) return 'null'
            if (v instanceof Boolean) return v.toString()
            if (v instanceof BigDecimal) return v.toPlainString()
            if (v instanceof Number) return v.toString()
            return q(v.toString())
        }
        if (e instanceof UnaryMinusExpression && e.expression instanceof ConstantExpression
                && e.expression.value instanceof Number) {
            return '-' + value(e.expression)
        }
        if (e instanceof ListExpression) return '[' + e.expressions.collect { value(it) }.join(',') + ']'
        if (e instanceof MapExpression) {
            return '{"map":[' + e.mapEntryExpressions.collect { '[' + value(it.keyExpression) + ',' + value(it.valueExpression) + ']' }.join(',') + ']}'
        }
        if (e instanceof VariableExpression) return '{"var":' + q(e.name) + '}'
        if (e instanceof PropertyExpression) return '{"prop":' + q(e.text) + '}'
        if (e instanceof ClosureExpression) return '{"closure":true}'
        return '{"expr":' + q(e.text) + '}'
    }

    static List<Expression> argumentsOf(Expression args) {
        if (args instanceof TupleExpression) return args.expressions
        return [args]
    }
}

class CallCollector extends CodeVisitorSupport {
    List<String> calls = []

    void add(String name, String receiver, List<Expression> args, Expression at) {
        calls << ('{"name":' + Json.q(name) + ',"receiver":' + Json.q(receiver) + ',"line":' + at.lineNumber
                + ',"args":[' + args.collect { Json.value(it) }.join(',') + ']}')
    }

    @Override
    void visitMethodCallExpression(MethodCallExpression call) {
        add(call.methodAsString, call.objectExpression.text, Json.argumentsOf(call.arguments), call)
        super.visitMethodCallExpression(call)
    }

    @Override
    void visitStaticMethodCallExpression(StaticMethodCallExpression call) {
        add(call.method, call.ownerType.name, Json.argumentsOf(call.arguments), call)
        super.visitStaticMethodCallExpression(call)
    }

    @Override
    void visitConstructorCallExpression(ConstructorCallExpression call) {
        add('new', call.type.name, Json.argumentsOf(call.arguments), call)
        super.visitConstructorCallExpression(call)
    }

    @Override
    void visitDeclarationExpression(DeclarationExpression decl) {
        if (!decl.isMultipleAssignmentDeclaration()) {
            add('=', decl.variableExpression.name, [decl.rightExpression], decl)
        }
        super.visitDeclarationExpression(decl)
    }
}

static String errorJson(Object message) {
    int line = -1
    int column = -1
    String text
    if (message instanceof SyntaxErrorMessage) {
        line = message.cause.line
        column = message.cause.startColumn
        text = message.cause.originalMessage ?: message.cause.message
    } else if (message instanceof ExceptionMessage) {
        text = message.cause.toString()
    } else if (message instanceof SimpleMessage) {
        text = message.message
    } else {
        text = message.toString()
    }
    return '{"line":' + line + ',"column":' + column + ',"message":' + Json.q(text) + '}'
}

static List<Object> errorsOf(MultipleCompilationErrorsException e) {
    return e.errorCollector.errors ?: []
}

static boolean unresolvedClass(Object message) {
    return message instanceof SyntaxErrorMessage && message.cause.message.startsWith('unable to resolve class ')
}

static String check(String path, boolean wantCalls) {
    def file = new File(path)
    def errors = []
    def calls = []
    if (!file.isFile()) {
        errors << '{"line":-1,"column":-1,"message":' + Json.q('no such file: ' + path) + '}'
    } else {
        def config = new CompilerConfiguration()
        config.sourceEncoding = 'UTF-8'
        def unit = new CompilationUnit(config)
        def source = unit.addSource(file)
        boolean parsed = false
        try {
            unit.compile(Phases.CONVERSION)
            parsed = true
        } catch (MultipleCompilationErrorsException e) {
            errorsOf(e).each { errors << errorJson(it) }
        }
        if (parsed) {
            if (wantCalls) {
                def collector = new CallCollector()
                def module = source.AST
                module.statementBlock.visit(collector)
                module.methods.each { it.code?.visit(collector) }
                calls = collector.calls
            }
            try {
                unit.compile(Phases.SEMANTIC_ANALYSIS)
            } catch (MultipleCompilationErrorsException e) {
                errorsOf(e).findAll { !unresolvedClass(it) }.each { errors << errorJson(it) }
            }
        }
    }
    return '{"file":' + Json.q(path) + ',"ok":' + errors.isEmpty() + ',"errors":[' + errors.join(',') + ']' +
            ',"calls":[' + calls.join(',') + ']}'
}

def wantCalls = args.contains('--calls')
def files = args.findAll { it != '--calls' }
def out = new PrintStream(new FileOutputStream(FileDescriptor.out), true, 'UTF-8')
if (files == ['-']) {
    def reader = new BufferedReader(new InputStreamReader(System.in, 'UTF-8'))
    String line
    while ((line = reader.readLine()) != null) {
        if (line.isEmpty()) continue
        out.println(check(line, wantCalls))
        out.flush()
    }
} else {
    files.each { out.println(check(it, wantCalls)) }
}
