#!/usr/bin/env python3
"""Random tokenizer test texts: words in many scripts, digits, contractions, whitespace runs,
control and private-use characters, and the special-token texts given on the command line.

usage: gen_texts.py SEED COUNT [special texts...]   (MODE=words|soup|long in the environment)
Writes the texts to stdout separated by "\x01SEP\x01\n". Deterministic for a given seed.
"""
import random, sys
seed=int(sys.argv[1]); n=int(sys.argv[2]); extra=sys.argv[3:]  # extra: special token texts
R=random.Random(seed)
words=['the','The','THE','hello','world','Hello','café','naïve','straße','niño','I','a','x','don','can','won','it','He','we',
 'Привет','мир','Ёлка','你好','世界','今天','こんにちは','カタカナ','한국어','문장','مرحبا','नमस्ते','Γειά','κόσμε','ΐ','ώ','Kelvin','Ω',
 'שלום','ไทย','ภาษา','😀','👩\u200d👩\u200d👧','🇫🇷','👍🏽','e\u0301','a\u0308\u0301','\u0301','ﬁ','ＡＢＣ','１２３','①','½','²','Ⅻ','٣','३',
 'func','def','return','{','}','(',')','[',']','<','>','</','/>','=>','->','::','...','…','—','–','«','»','“','”','‘','’','¿','¡',
 '$','%','&','*','+','=','|','~','^','`','@','#','\\','/',':',';',',','.','!','?','"',"'",'-','_',
 '0','1','12','123','1234','12345','3.14','1,000','0x1F','1e10','-42',
 "'s","'t","'re","'ve","'m","'ll","'d","'S","'T","'RE","'Ve","'LL","'D","'x",'\u00a0','\u2028','\u3000','\u200b','\u0085','\u2003',
 '\ue000','\U0010fffd','\U0001f600','\u0378','\x07','\x1b','\x0b','\x0c','\x7f','\u00ad','\ufeff','€','£','¥','©','®','™','°','±','×','÷',
 '∑','∞','≤','≈','√','π','∀','∈','ℝ','←','→','█','♥','★','\u2581','▁the','Ġ','Ċ']
ws=[' ','  ','   ','    ','\t','\t\t','\n','\n\n','\n\n\n','\r\n','\r','\n ',' \n','  \n  ','\f','\v',' \t ','        ']
extra=[e.encode().decode('unicode_escape') if '\\' in e else e for e in extra]
def text():
    k=R.random()
    parts=[]
    L=R.randint(0,25)
    for _ in range(L):
        r=R.random()
        if r<0.45: parts.append(R.choice(words))
        elif r<0.75: parts.append(R.choice(ws))
        elif r<0.85 and extra: parts.append(R.choice(extra))
        elif r<0.92: parts.append(''.join(chr(R.randint(0x20,0x7e)) for _ in range(R.randint(1,6))))
        else:
            # random codepoints from assorted ranges
            rng=R.choice([(0xa0,0x24f),(0x370,0x3ff),(0x400,0x4ff),(0x590,0x6ff),(0x900,0x97f),(0xe00,0xe7f),(0x1100,0x11ff),(0x1f00,0x1fff),(0x2000,0x206f),(0x2100,0x22ff),(0x3000,0x30ff),(0x4e00,0x9fff),(0xac00,0xd7a3),(0xfe00,0xffef),(0x1f300,0x1faff),(0x20000,0x2a6df),(0x300,0x36f)])
            parts.append(''.join(chr(R.randint(*rng)) for _ in range(R.randint(1,4))))
        if R.random()<0.5 and parts and not parts[-1].isspace(): parts.append(' ')
    t=''.join(parts)
    if k<0.05: t=' '+t
    if k>0.95: t=t+' '
    return t
import os
mode=os.environ.get('MODE','words')
def soup():
    L=R.randint(1,200)
    o=[]
    for _ in range(L):
        r=R.random()
        if r<0.3: o.append(R.choice(' \t\n\r\x0b\x0c\u00a0\u3000\u2028\u0085'))
        elif r<0.5: o.append(chr(R.randint(0x21,0x7e)))
        elif r<0.6: o.append(R.choice(["'s","'T","'ll","'RE","'d","'m","'ve"]))
        else:
            while True:
                c=R.randint(0x80,0x2ffff) if R.random()<0.9 else R.randint(0xe0000,0x10ffff)
                if not (0xd800<=c<=0xdfff): break
            o.append(chr(c))
    return ''.join(o)
def long():
    return ''.join(text() for _ in range(R.randint(5,40)))
gen={'words':text,'soup':soup,'long':long}[mode]
out=[gen() for _ in range(n)]
out+=['', ' ', '  ', '\n', ' \n', 'a', "'", "''", "'s", " 's", 'Hello', ' Hello', '\t\tx', 'x  ', '   ', '\r\n\r\n', '1234567', '１２３４']
sys.stdout.buffer.write('\x01SEP\x01\n'.join(out).encode('utf-8','surrogatepass'))
